"""A real HTTP server for dmon's webhook tests (http.server, loopback only).

Listens on 127.0.0.1 on an ephemeral port and prints ``READY <port>`` on
stdout once it accepts connections. Then it prints one JSON line per POST:

    {"path": "/x", "headers": {"content-type": "..."}, "body": "...",
     "status": 200, "time": <monotonic seconds>}

Header names are lower-cased. It answers 500 to the first N requests when
argv[1] is N, 400 to any path starting with /bad, and 200 otherwise. Every
line is flushed at once. It runs until killed, or until its stdin reaches end
of file (so it dies with the test that spawned it).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_FIRST = int(sys.argv[1]) if len(sys.argv) > 1 else 0
lock = threading.Lock()
seen = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            seen += 1
            if seen <= FAIL_FIRST:
                status = 500
            elif self.path.startswith("/bad"):
                status = 400
            else:
                status = 200
            line = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8"),
                "status": status,
                "time": time.monotonic(),
            }
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        answer = b"ok" if status == 200 else b"no"
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"READY {server.server_address[1]}", flush=True)
sys.stdin.read()

"""A Riemann client over TLS for dmon's tests: the PyPI `riemann-client`
library (its Client, framing and protocol buffers), over one connection
kept open, driven by commands on stdin:

    send HOST SERVICE METRIC   -> "sent" once dmon acknowledged it
    query QUERY                -> a JSON list of "host/service" it matched

Any failure prints "error: ..." (the connection's first one exits 1).

Usage: riemann_tls_client.py PORT CA_FILE [CERT_FILE KEY_FILE]

riemann-client's own TLSTransport.connect() asks for TLS 1.0 through
ssl.wrap_socket: no current server accepts TLS 1.0 (rustls speaks 1.2 and
1.3) and Python 3.12 removed wrap_socket. So the socket is wrapped here with
an SSLContext, which is all this subclass changes.
"""

import json
import ssl
import sys

from riemann_client.client import Client
from riemann_client.transport import TCPTransport, TLSTransport


class ModernTLSTransport(TLSTransport):
    def connect(self):
        TCPTransport.connect(self)
        context = ssl.create_default_context(cafile=self.ca_certs)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        self.socket = context.wrap_socket(self.socket, server_hostname=self.host)


def main():
    port = int(sys.argv[1])
    ca = sys.argv[2]
    cert, key = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    transport = ModernTLSTransport(
        "localhost", port, timeout=10, ca_certs=ca, certfile=cert, keyfile=key
    )
    try:
        transport.connect()
    except Exception as e:  # the handshake's failure is the test's answer
        print(f"error: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    client = Client(transport)
    print("connected", flush=True)
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        try:
            if command == "send":
                host, service, metric = rest.split(" ")
                client.event(host=host, service=service, metric_f=float(metric))
                print("sent", flush=True)
            elif command == "query":
                events = client.query(rest)
                print(json.dumps(sorted(f"{e['host']}/{e['service']}" for e in events)), flush=True)
            else:
                print(f"error: unknown command {command!r}", flush=True)
        except Exception as e:
            print(f"error: {type(e).__name__}: {e}", flush=True)


main()

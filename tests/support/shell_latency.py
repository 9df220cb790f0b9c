"""Time from a datagram to its printer line on screen, in each of dmon's shells.

Usage (after a build; docs/src/performance.md shows the numbers):

    python3 tests/support/shell_latency.py target/release/dmon [N]

Each shell runs in its own tmux pane; N datagrams are sent while the prompt
is idle and N more while a statement is half typed, and the screen is polled
(`tmux capture-pane`) until the line shows. The baseline, measured in the
same run, is the same trip through a program that only receives datagrams
and prints them: what tmux and the polling cost on their own.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MODULE = 'from dmon.streams import *\nlat_stream = printer("lat: ")\n'
BASELINE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print("UDP 127.0.0.1:%d >>>" % s.getsockname()[1], flush=True)
while True:
    print("lat: " + s.recv(65536).decode(), flush=True)
"""


def tmux(*args):
    return subprocess.run(["tmux", "-L", "dmon-latency", *args],
                          capture_output=True, text=True).stdout


def screen():
    return tmux("capture-pane", "-p", "-J", "-t", "lat")


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = screen()
        if pred(text):
            return text
        time.sleep(0.002)
    raise TimeoutError(screen())


def measure(command, n):
    """Milliseconds from sendto() to the line on screen: (idle, half typed)."""
    tmux("kill-server")
    tmux("new-session", "-d", "-s", "lat", "-x", "200", "-y", "50", command)
    banner = wait_for(lambda s: "UDP 127.0.0.1:" in s and (">>>" in s or "In [1]:" in s))
    port = int(banner.split("UDP 127.0.0.1:")[1].split()[0])
    time.sleep(2)  # bpython gathers module names for a while: measure after
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    results = {"idle": [], "half typed": []}
    for phase in results:
        if phase == "half typed":
            tmux("send-keys", "-t", "lat", "-l", "x = [1, 2,")
            wait_for(lambda s: "x = [1, 2," in s)
        for i in range(n):
            tag = f"{phase[0]}{i}"
            start = time.monotonic()
            sock.sendto(json.dumps({"host": tag}, separators=(",", ":")).encode(), ("127.0.0.1", port))
            wait_for(lambda s: f'lat: {{"host":"{tag}"' in s)
            results[phase].append((time.monotonic() - start) * 1000)
            time.sleep(0.05)
    tmux("kill-server")
    return results


def summary(values):
    values = sorted(values)
    return (f"median {statistics.median(values):5.1f} ms  "
            f"p90 {values[int(len(values) * 0.9) - 1]:5.1f} ms  max {values[-1]:5.1f} ms")


def main():
    dmon = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/dmon")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        module = os.path.join(tmp, "lat.py")
        with open(module, "w") as f:
            f.write(MODULE)
        baseline = os.path.join(tmp, "baseline.py")
        with open(baseline, "w") as f:
            f.write(BASELINE)
        env = f"env HOME={tmp} XDG_DATA_HOME={tmp} IPYTHONDIR={tmp}/ipython " \
              "DMON_RIEMANN_TCP=off DMON_RIEMANN_UDP=off"
        runs = {"baseline (python: recv + print)": f"{sys.executable} {baseline}"}
        for kind in ("python", "ipython", "bpython"):
            runs[f"dmon shell -s {kind}"] = \
                f"{env} {dmon} shell -s {kind} --streams {module} --udp 127.0.0.1:0"
        base = None
        for name, command in runs.items():
            results = measure(command, n)
            for phase, values in results.items():
                med = statistics.median(values)
                base = base if base is not None else med
                print(f"{name:34} {phase:10}  {summary(values)}  ({med / base:.1f}x baseline)")


if __name__ == "__main__":
    main()

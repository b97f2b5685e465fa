"""A whole connet setup on loopback, in one command: a server, a destination in front of a
small web site, a source, and one HTTP request through the tunnel.

    python examples/demo.py

Everything binds 127.0.0.1 on ports the system picks, and stops when the demo ends.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

CONNET = [sys.executable, "-m", "connet_core.cli"]
LISTENING = re.compile(r"listening (\S+) (udp|tcp) (\S+)")


class Process:
    """A connet daemon whose log lines are echoed and searched."""

    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([*CONNET, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"  [{self.name}] {line.rstrip()}")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"demo: {self.name} did not log {pattern!r} (exit code {self.proc.poll()})")
                self.cond.wait(0.5)

    def port(self, role: str, proto: str) -> int:
        return int(self.wait_for(rf"listening {role} {proto} \S+:(\d+)").group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="connet-demo-"))
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Hello from behind the NAT, through connet!</h1>\n")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **kw)  # noqa: E731
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    print(f"demo: a web site on 127.0.0.1:{web.server_address[1]} (the service to expose)")

    subprocess.run([*CONNET, "cert", "--out", str(work / "certs"), "--host", "127.0.0.1"], check=True,
                   stdout=subprocess.DEVNULL)
    (work / "server.toml").write_text(
        "[server]\n"
        'addr = "127.0.0.1:0"\n'
        'relay-addr = "127.0.0.1:0"\n'
        'relay-hostname = "127.0.0.1"\n'
        f'cert-file = "{work / "certs" / "server.pem"}"\n'
        f'key-file = "{work / "certs" / "server-key.pem"}"\n'
        'tokens = ["demo-destination-token", "demo-source-token"]\n'
    )
    processes: list[Process] = []
    try:
        server = Process("server", ["server", "--config", str(work / "server.toml")])
        processes.append(server)
        control = f"127.0.0.1:{server.port('control', 'udp')}"
        common = ["--server-addr", control, "--server-cas", str(work / "certs" / "ca.pem"), "--direct-addr", "127.0.0.1:0"]
        destination = Process("destination", [*common, "--token", "demo-destination-token", "--dst-name", "web",
                                              "--dst-addr", f"127.0.0.1:{web.server_address[1]}"])
        processes.append(destination)
        source = Process("source", [*common, "--token", "demo-source-token", "--src-name", "web",
                                    "--src-addr", "127.0.0.1:0"])
        processes.append(source)
        source_port = source.port("source", "tcp")
        source.wait_for(r"peer \S+ connected direct")
        url = f"http://127.0.0.1:{source_port}/"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        print(f"\ndemo: GET {url} through the tunnel returned:\n\n    {body.strip()}\n")
        return 0
    finally:
        for process in reversed(processes):
            process.stop()
        web.shutdown()


if __name__ == "__main__":
    sys.exit(main())

"""UDP tunnel helpers for tests: clients with UDP endpoints, a UDP echo service, senders
that check every reply came back to them, dnsmasq as a real DNS service."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import AsyncIterator, Iterator

from support.cluster import TOKENS, ServerInfo
from support.daemons import Daemon, Daemons
from support.programs import need_program


def start_udp_destination(daemons: Daemons, server: ServerInfo, target_port: int, *, name: str = "dst",
                          endpoint: str = "dns", route: str = "any", protocol: str = "udp",
                          status_addr: str | None = None) -> Daemon:
    args = [*server.client_args(TOKENS[0]), "--dst-name", endpoint, "--dst-addr", f"127.0.0.1:{target_port}",
            "--dst-route", route, "--dst-protocol", protocol]
    if status_addr is not None:
        args += ["--status-addr", status_addr]
    return daemons.start(name, args)


def start_udp_source(daemons: Daemons, server: ServerInfo, *, name: str = "src", endpoint: str = "dns",
                     route: str = "any", protocol: str = "udp", status_addr: str | None = None,
                     extra: tuple[str, ...] = ()) -> tuple[Daemon, int]:
    args = [*server.client_args(TOKENS[1]), "--src-name", endpoint, "--src-addr", "127.0.0.1:0",
            "--src-route", route, "--src-protocol", protocol, *extra]
    if status_addr is not None:
        args += ["--status-addr", status_addr]
    daemon = daemons.start(name, args)
    _, port = daemon.listening("source", protocol)
    return daemon, port


def status(daemon: Daemon) -> dict:
    """The daemon's status JSON (it was started with --status-addr 127.0.0.1:0)."""
    _, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
        return json.loads(answer.read())


def metrics(daemon: Daemon) -> str:
    _, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def udp_endpoint(report: dict, name: str, role: str) -> dict:
    return next(e for e in report["endpoints"] if e["name"] == name and e["role"] == role)


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def udp_echo_server() -> AsyncIterator[int]:
    """A UDP echo service on loopback: every datagram goes back to its sender, whole."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def udp_roundtrip(port: int, payload: bytes, *, timeout: float = 1.0, tries: int = 10) -> bytes | None:
    """Send ``payload`` to 127.0.0.1:``port`` from one socket until an answer comes (the first
    datagrams of a flow may wait for its path), or None after ``tries``. Blocking: run it in
    a thread from async tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for _ in range(tries):
            sock.sendto(payload, ("127.0.0.1", port))
            try:
                data, _ = sock.recvfrom(65536)
                return data
            except TimeoutError:
                continue
    return None


def wait_udp_tunnel(port: int, timeout: float = 20.0) -> None:
    """Until a datagram through the source at ``port`` comes back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if udp_roundtrip(port, b"ready?", timeout=0.5, tries=1) == b"ready?":
            return
    raise AssertionError(f"no UDP answer through 127.0.0.1:{port} within {timeout:.0f} s")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def dnsmasq(tmp: Path) -> Iterator[int]:
    """dnsmasq answering for test.connet (A 10.1.2.3) on a free loopback port, no upstream."""
    program = need_program("dnsmasq")
    for attempt in range(5):
        # dnsmasq listens on the port over UDP *and* TCP: the port must be free in both, and
        # another process may still take it between our probe and dnsmasq's bind (then: again)
        port = free_port_both()
        process = subprocess.Popen(
            [program, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-daemon", "--conf-file=/dev/null",
             f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--address=/test.connet/10.1.2.3",
             f"--pid-file={tmp / 'dnsmasq.pid'}", "--user=" + os.environ.get("USER", "root")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            if _wait_answering(process, port):
                yield port
                return
        finally:
            process.terminate()
            process.wait(10)
    raise AssertionError("dnsmasq found its port taken five times in a row")


def free_port_both() -> int:
    """A port number free for TCP and UDP on loopback at once (dnsmasq and iperf3 use both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both TCP and UDP")


def _wait_answering(process: subprocess.Popen, port: int) -> bool:
    """Until dnsmasq answers on ``port`` itself (asked directly, one try per second), so that
    a failure through the tunnel is the tunnel's. False when its port was taken meanwhile;
    one clear failure when dnsmasq exited for another reason."""
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            if "Address already in use" in output:
                return False
            raise AssertionError(f"dnsmasq exited ({process.returncode}) on port {port}: {output}")
        if dig(port, tries=1, wait=1) == "10.1.2.3":
            return True
    raise AssertionError(f"dnsmasq did not answer on port {port} within 15 s")


def dig(port: int, name: str = "test.connet", *, tries: int = 3, wait: int = 2) -> str:
    """The A record ``dig`` gets for ``name`` through 127.0.0.1:``port`` ('' for none)."""
    program = need_program("dig")
    done = subprocess.run([program, "@127.0.0.1", "-p", str(port), name, "A", "+short", f"+time={wait}",
                           f"+tries={tries}"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()

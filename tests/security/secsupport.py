"""Helpers for the security tests: servers with hostile-minded configurations, an in-process
attacker built on the real transport and protocol messages, RSS readings."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from connet_core.certs import make_identity, sign_proof
from connet_core.model import HostPort, certificate_hash
from connet_core.plugins import load_hooks
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    ALPN_RELAY,
    Announce,
    AnnounceRefused,
    Authenticate,
    Authenticated,
    Challenge,
    Hello,
    PeersUpdate,
    Proof,
    RelaysUpdate,
    Welcome,
)
from connet_core.protocol.streams import MessageStream
from connet_core.transport import Connection, Endpoint, Trust
from support.cluster import RELAY_TOKEN, TOKENS, ServerInfo
from support.daemons import Daemon, Daemons

# Tokens of the security tests: distinctive strings, so a grep of the logs cannot miss one.
TOKEN_A = "sec-tok-a-" + secrets.token_hex(8)
TOKEN_B = "sec-tok-b-" + secrets.token_hex(8)
TOKEN_C = "sec-tok-c-" + secrets.token_hex(8)
TOKEN_D = "sec-tok-d-" + secrets.token_hex(8)
WRONG_TOKEN = "sec-wrong-" + secrets.token_hex(8)
TOKENS_IN_PLAY = [*TOKENS, RELAY_TOKEN, TOKEN_A, TOKEN_B, TOKEN_C, TOKEN_D, WRONG_TOKEN]


def start_custom_server(daemons: Daemons, certs: Path, body: str, *, name: str = "server") -> ServerInfo:
    """``connet server`` on loopback with ``body`` appended inside ``[server]`` (tokens, rules)."""
    config = daemons.workdir / f"{name}.toml"
    config.write_text(
        "[server]\n"
        'addr = "127.0.0.1:0"\n'
        'relay-addr = "127.0.0.1:0"\n'
        'relay-hostname = "127.0.0.1"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n' + body
    )
    daemon = daemons.start(name, ["server", "--config", str(config), "--log-level", "debug"])
    _, port = daemon.listening("control", "udp")
    return ServerInfo(daemon, port, config, certs)


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def log_time(line: str) -> float:
    """Seconds since midnight of a text log line (``HH:MM:SS.mmm ...``)."""
    match = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d{3})", line)
    assert match, line
    h, m, s, ms = map(int, match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def lines_matching(daemon: Daemon, pattern: str, start: int = 0) -> list[str]:
    regex = re.compile(pattern)
    with daemon._cond:  # noqa: SLF001 - the same lock wait_for uses
        lines = list(daemon.lines[start:])
    return [line for line in lines if regex.search(line)]


async def bind_endpoint(transport: str = "auto") -> Endpoint:
    """A dial-only endpoint of the real transport on loopback."""
    return await load_hooks().transport(transport).bind(HostPort("127.0.0.1", 0), identity=None, alpns=[])


def control_trust(server: ServerInfo) -> Trust:
    return Trust(server_name="127.0.0.1", cafile=server.certs / "ca.pem")


@dataclass
class Identity:
    """A client identity of one run: its DER certificate and key."""

    der: bytes
    key: object
    tls: object

    @classmethod
    def new(cls) -> "Identity":
        tls, der, key = make_identity("connet-client")
        return cls(der, key, tls)

    @property
    def hash(self) -> bytes:
        return certificate_hash(self.der)


@dataclass
class ControlSession:
    """An in-process client's control session that records everything control pushes."""

    conn: Connection
    messages: MessageStream
    observed: str
    peers: list[PeersUpdate] = field(default_factory=list)
    relays: list[RelaysUpdate] = field(default_factory=list)
    refused: list[AnnounceRefused] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint, server: ServerInfo, token: str) -> "ControlSession":
        conn = await endpoint.dial(HostPort("127.0.0.1", server.control_port), alpn=ALPN_CONTROL,
                                   trust=control_trust(server), timeout=10)
        messages = MessageStream(await conn.open_stream())
        await messages.send(Authenticate(token=token))
        welcome = await messages.recv(Authenticated, timeout=10)
        session = cls(conn, messages, welcome.observed_addr)
        session.task = asyncio.create_task(session._record())
        return session

    async def _record(self) -> None:
        try:
            while True:
                message = await self.messages.recv((PeersUpdate, RelaysUpdate, AnnounceRefused))
                {PeersUpdate: self.peers, RelaysUpdate: self.relays, AnnounceRefused: self.refused}[type(message)].append(message)
                self.changed.set()
        finally:
            self.changed.set()  # wake a waiter: wait() reports the ended session

    async def announce(self, name: str, role: str, identity: Identity, addresses: tuple[str, ...] = (),
                       route: str = "any") -> None:
        await self.messages.send(Announce(name, role, route, identity.der, addresses))

    async def wait(self, predicate, timeout: float = 10.0):
        """Until ``predicate()`` is truthy (re-checked on every pushed message); its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                if self.task is not None and self.task.done():
                    raise AssertionError(f"control session ended: {self.task.exception()!r}")
                self.changed.clear()
                await self.changed.wait()

    def peer_certificates(self, name: str) -> set[bytes]:
        """Every peer certificate control ever pushed to this session for ``name``."""
        return {p.certificate for u in self.peers if u.name == name for p in u.peers}

    def latest_peers(self, name: str):
        updates = [u for u in self.peers if u.name == name]
        return updates[-1].peers if updates else None

    def grant_for(self, name: str, role: str):
        """(relay addr, relay certificate, grant) of the latest RelaysUpdate for (name, role)."""
        updates = [u for u in self.relays if u.name == name and u.role == role and u.relays]
        if not updates:
            return None
        info = updates[-1].relays[0]
        return HostPort.parse(info.addr), info.certificate, info.grant

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.conn.close()


async def relay_handshake(endpoint: Endpoint, relay_addr: HostPort, relay_cert: bytes, hello_cert: bytes,
                          signing_key, grants: tuple[bytes, ...]) -> tuple[Connection, MessageStream]:
    """Dial the relay and run the dialer's half of the proof; the last recv (Welcome) is the
    caller's: it raises ConnectionLost with the relay's close code on a refusal."""
    conn = await endpoint.dial(relay_addr, alpn=ALPN_RELAY, trust=Trust(pinned_der=relay_cert), timeout=10)
    messages = MessageStream(await conn.open_stream())
    await messages.send(Hello(certificate=hello_cert, grants=grants))
    challenge = await messages.recv(Challenge, timeout=10)
    await messages.send(Proof(sign_proof(signing_key, challenge.nonce, certificate_hash(relay_cert), ALPN_RELAY)))
    return conn, messages


async def relay_client(endpoint, relay_addr, relay_cert, identity: Identity, grants) -> Connection:
    conn, messages = await relay_handshake(endpoint, relay_addr, relay_cert, identity.der, identity.key, grants)
    await messages.recv(Welcome, timeout=10)
    return conn


class UdpSink:
    """A UDP socket that never answers and counts what it receives (loopback only)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.datagrams = 0
        self.bytes = 0
        self.dials: set[bytes] = set()  # the destination connection IDs of the Initials seen: one per dial
        self.last_at: float | None = None  # time.monotonic() of the last datagram

    @property
    def addr(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.datagrams += 1
            self.bytes += len(data)
            self.last_at = time.monotonic()
            if len(data) > 6 and data[0] & 0xC0 == 0xC0:  # a long header: its DCID names the dial
                self.dials.add(data[6:6 + data[5]])

    async def collect(self, seconds: float) -> None:
        """Count everything that arrives during a measuring window of ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), remaining)
            except TimeoutError:
                break
            self.datagrams += 1
            self.bytes += len(data)
            self.last_at = time.monotonic()
            if len(data) > 6 and data[0] & 0xC0 == 0xC0:  # a long header: its DCID names the dial
                self.dials.add(data[6:6 + data[5]])

    def close(self) -> None:
        self.sock.close()


def quic_initials(count: int, alpn: str = ALPN_CONTROL, server_name: str = "127.0.0.1") -> list[bytes]:
    """``count`` client Initial datagrams of distinct fake connections (aioquic sans-I/O)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    out = []
    for _ in range(count):
        quic = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[alpn],
                                                              server_name=server_name))
        quic.connect(("127.0.0.1", 9), now=time.monotonic())
        out.extend(data for data, _ in quic.datagrams_to_send(now=time.monotonic()))
    return out


def random_payload(size: int) -> bytes:
    return os.urandom(size)


def flood_hosts(count: int) -> list[str]:
    """``count`` distinct loopback source addresses (127.0.0.2 ...): all of 127.0.0.0/8 is loopback."""
    return [f"127.0.0.{2 + i}" for i in range(count)]


async def flood(datagrams: list[bytes], port: int, *, rate: float, seconds: float, hosts: list[str],
                stop: asyncio.Event | None = None, under_way: asyncio.Event | None = None) -> int:
    """Send ``datagrams`` (cycled) to 127.0.0.1:``port`` at about ``rate`` per second for at most
    ``seconds`` (or until ``stop`` is set), round-robin from one socket per source host. Bounded in
    rate and time; what comes back is read and thrown away. ``under_way`` is set once a second's
    worth was sent. Returns the number of datagrams sent."""
    socks = []
    try:
        for host in hosts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((host, 0))
            sock.setblocking(False)
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds and not (stop is not None and stop.is_set()):
            due = int((time.monotonic() - start) / tick + 1) * per_tick
            while sent < due:
                sock = socks[sent % len(socks)]
                try:
                    sock.sendto(datagrams[sent % len(datagrams)], ("127.0.0.1", port))
                except BlockingIOError:
                    pass  # the local buffer is full: that datagram is simply not sent
                sent += 1
            if under_way is not None and sent >= rate:
                under_way.set()
            for sock in socks:
                while True:
                    try:
                        sock.recv(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
            await asyncio.sleep(tick)  # the pacing of the flood, not a wait for an event
        return sent
    finally:
        for sock in socks:
            sock.close()


def handshake_shaped_garbage(count: int, size: int = 1200) -> list[bytes]:
    """Datagrams that pass as QUIC v1 Initials up to the header (version 1, 8-byte connection
    IDs, no token, a plausible length) and are random after it: they cannot be decrypted."""
    out = []
    for _ in range(count):
        header = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8)
        header += b"\x00"  # token length 0
        remaining = size - len(header) - 2
        header += (0x4000 | remaining).to_bytes(2, "big")
        out.append(header + os.urandom(remaining))
    return out

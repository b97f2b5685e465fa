"""The transport seam: what an engine needs from QUIC (or anything shaped like it).

A transport plugin hands out a :class:`Transport` by name (hook ``connet_transport``).
``Transport.bind`` makes an :class:`Endpoint`: **one** UDP socket that both listens (accepts
connections for the ALPNs it was bound with) and dials. Connections carry bidirectional
:class:`Stream` s with real backpressure: ``Stream.write`` waits while too much is unsent.

Errors raised through this seam are the ones of :mod:`connet_core.errors`:
``DialError`` from ``dial``, ``ConnectionLost`` from anything on a closed connection,
``StreamReset`` from a stream the peer reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from connet_core.errors import TransportError
from connet_core.model import HostPort


@dataclass(frozen=True, slots=True)
class TLSIdentity:
    """A certificate chain and private key, PEM encoded (the leaf first)."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class Trust:
    """How a dialer checks the listener's certificate.

    Exactly one of:
    - ``pinned_der``: the listener must present exactly this DER certificate (peers, relays);
    - ``cafile``: a PEM bundle of CAs; ``None`` with no pin means the default trust store.
    ``server_name`` is the name checked against the certificate (and sent as SNI)."""

    server_name: str | None = None
    cafile: Path | None = None
    pinned_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Timeouts and limits; the defaults keep failover within seconds (docs/protocol.md)."""

    keepalive_interval: float = 1.0  # ping every connection this often
    idle_timeout: float = 3.0  # a connection that heard nothing this long is down
    handshake_timeout: float = 5.0
    max_streams: int = 4096  # concurrent bidirectional streams a peer may open
    stream_send_buffer: int = 256 * 1024  # Stream.write waits while more than this is unsent
    max_datagram_size: int = 1200  # until a probe showed that the path carries more
    # One path MTU probe per connection, of this many bytes (0: none): 1500 (Ethernet) minus
    # IPv6 and UDP headers. aioquic sends it through our adapter; qh3 probes on its own.
    probe_datagram_size: int = 1452
    initial_rtt: float | None = None  # None: the library's default
    # Stateless reset (RFC 9000 10.3): tokens are HMAC(key, connection ID), so a restarted
    # endpoint with the same persisted key can reset its old connections. None: random per run.
    stateless_reset_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    bytes_sent: int
    bytes_received: int
    smoothed_rtt: float | None


@runtime_checkable
class Stream(Protocol):
    """One bidirectional stream."""

    @property
    def stream_id(self) -> int: ...

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the peer has finished (FIN).
        Raises StreamReset or ConnectionLost."""

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while the unsent buffer is above the bound (backpressure).
        The same as ``write_nowait`` followed, when it returns False, by ``drain``."""

    def write_nowait(self, data: bytes) -> bool:
        """Queue ``data`` without waiting, from a callback that cannot await (a TCP
        protocol's ``data_received``). Returns False when the unsent buffer is now above the
        bound: the caller must ``await drain()`` before it writes more. Raises what ``write``
        raises."""

    async def drain(self) -> None:
        """Wait until the unsent buffer is at or below the bound (at once if it is)."""

    async def write_eof(self) -> None:
        """Half-close: send FIN after what is queued. (Async because a stream layered on
        another, such as end-to-end TLS, must write its closing record first.)"""

    def reset(self, code: int) -> None:
        """Abort both directions with ``code`` (RESET_STREAM + STOP_SENDING)."""


@runtime_checkable
class Connection(Protocol):
    @property
    def alpn(self) -> str: ...

    @property
    def is_dialer(self) -> bool: ...

    @property
    def remote_address(self) -> HostPort:
        """The peer's address as this endpoint sees it (IPv4-mapped folded to IPv4)."""

    @property
    def peer_certificate(self) -> bytes | None:
        """The DER certificate the listener presented (dialer side), else None."""

    @property
    def closed(self) -> bool: ...

    def stats(self) -> ConnectionStats: ...

    async def open_stream(self) -> Stream: ...

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened. Raises ConnectionLost once closed."""

    def stop_keepalive(self) -> None:
        """Stop pinging: the connection closes by idle timeout once both ends are quiet.
        The graceful end for a connection no longer wanted (a close would discard data in
        flight); both ends must stop, or the other's pings keep it alive."""

    def close(self, code: int = 0, reason: str = "") -> None:
        """Close with an application close code; the peer sees code and reason."""

    async def wait_closed(self) -> "CloseInfo": ...


@dataclass(frozen=True, slots=True)
class CloseInfo:
    code: int
    reason: str
    by_peer: bool


@runtime_checkable
class Endpoint(Protocol):
    @property
    def local_address(self) -> HostPort:
        """The bound address (the real port when bound to port 0)."""

    async def accept(self) -> Connection:
        """The next incoming connection whose handshake completed."""

    async def dial(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> Connection:
        """Dial from this endpoint's own socket. Raises DialError."""

    async def close(self, code: int = 0, reason: str = "") -> None:
        """Close every open connection with ``code`` (the peers see it at once), then the socket."""

    # Optional (the QUIC endpoint has it; the client does without where it is missing):
    # def send_probe(self, data: bytes, address: HostPort) -> None:
    #     """One non-QUIC datagram from this socket to an IP literal (birthday probing)."""


@runtime_checkable
class TcpEndpoint(Endpoint, Protocol):
    """An endpoint that also carries QUIC over TLS-over-TCP, for clients whose UDP is
    blocked (optional: the quic plugin's endpoints are; the engines check with isinstance).
    Its connections then have ``carrier``: ``"udp"`` or ``"tcp"``."""

    async def listen_tcp(self, address: HostPort) -> HostPort:
        """Also accept connections over TLS-over-TCP at ``address`` (the endpoint's
        certificate is the outer one); the bound address. Raises TransportError."""

    async def dial_tcp(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> Connection:
        """As ``dial``, over TLS-over-TCP to ``address``; the outer certificate is checked
        against ``trust`` as the QUIC one is. Raises DialError."""


async def listen_over_tcp(endpoint: Endpoint, address: HostPort) -> HostPort:
    """``endpoint.listen_tcp(address)``, or TransportError when the transport has none."""
    if not isinstance(endpoint, TcpEndpoint):
        raise TransportError(f"cannot listen on TCP {address}: the transport carries QUIC over UDP only")
    return await endpoint.listen_tcp(address)


@runtime_checkable
class Transport(Protocol):
    name: str

    async def bind(
        self,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions = TransportOptions(),
    ) -> Endpoint:
        """Bind one UDP socket. With ``alpns`` (and an ``identity``) it also accepts
        connections for those ALPNs; with none it only dials."""

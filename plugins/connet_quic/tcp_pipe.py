"""QUIC datagrams through one TLS-over-TCP connection: a path for networks that block UDP.

The endpoint stays one QUIC engine. A client whose UDP is blocked opens a TLS connection
over TCP to the server (or relay) and sends its QUIC datagrams through it as records, each a
2-byte big-endian length and the datagram (:class:`DatagramPipe`); the server feeds every
record to its QUIC endpoint as if it had come by UDP, and its answers go back the same way.
Inside, nothing changes: the QUIC handshake, its certificate checks and the end-to-end TLS of
relayed streams run as over UDP (the outer TLS only hides the QUIC packets from middleboxes
that would not pass them; the relay reads nothing more than before).

Each pipe is a path of its own to the libraries: an address in the discard-only prefix
``100::/64`` (RFC 6666) that no UDP peer can have (:class:`PipePaths`). Engines still see
the real peer: ``remote_address`` is the TCP peer's address (so CIDR rules apply to it) and
``carrier`` says ``"tcp"``.

Bounds, as a router would have them: a record over ``MAX_RECORD`` bytes, an empty one, or a
first record that is not a QUIC long header ends the pipe with one log line (rate-limited);
what is read is handed over at once (one partial record buffered at most); datagrams to send
while more than ``SEND_BUFFER_LIMIT`` bytes wait for TCP are dropped, not queued: QUIC's
congestion control needs to see that loss to slow down, and a deeper queue would only add
latency (bufferbloat inside TCP). A pipe that carried nothing for ``IDLE_TIMEOUT`` seconds
(a QUIC connection pings every second) is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import ssl
import struct
from typing import TYPE_CHECKING, Callable

from connet_core.errors import DialError, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.tls_stream import load_identity
from connet_core.transport import TLSIdentity, Trust

from connet_quic.addresses import Address
from connet_quic.dial_trust import trust_anchors
from connet_quic.refusals import CauseLog

if TYPE_CHECKING:
    from connet_quic.connection import QuicEndpointConnection

logger = logging.getLogger("connet.quic")

RECORD = struct.Struct("!H")
MAX_RECORD = 4096  # bytes: QUIC datagrams here are at most 1452 (the path MTU probe)
SEND_BUFFER_LIMIT = 256 * 1024  # bytes waiting for TCP before datagrams are dropped
IDLE_TIMEOUT = 15.0  # seconds without a record: the pipe is closed
HANDSHAKE_TIMEOUT = 10.0  # the outer TLS handshake
MAX_PIPES = 4096  # open pipes per endpoint; more accepted TCP connections are refused
ALPN = "connet-tcp/1"
_PIPE_PREFIX = int(ipaddress.IPv6Address("100::"))  # RFC 6666: discard-only, never a real peer
PIPE_HOST_PREFIX = "100::"  # how every pipe address is written (its number fits the last 64 bits)


def server_context(identity: TLSIdentity) -> ssl.SSLContext:
    """The outer TLS of a listener: the endpoint's own certificate, so a client checks it as
    it checks the QUIC handshake's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN])
    load_identity(ctx, identity)
    return ctx


def client_context(trust: Trust, address: HostPort) -> tuple[ssl.SSLContext, str | None]:
    """The outer TLS of a dial, checked as :meth:`QuicEndpoint.dial` checks QUIC's
    (:func:`connet_quic.dial_trust.trust_anchors`); a pin is also compared exactly after the
    handshake (:func:`check_pin`). Raises DialError."""
    cadata, server_name = trust_anchors(trust, address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN])
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata.decode("ascii", "replace"))
    else:
        try:
            import certifi  # the bundle the QUIC dial trusts by default
        except ImportError:
            ctx.load_default_certs()
        else:
            ctx.load_verify_locations(cafile=certifi.where())
    ctx.check_hostname = server_name is not None
    return ctx, server_name


def check_pin(pipe: "DatagramPipe", trust: Trust, address: HostPort) -> None:
    if trust.pinned_der is not None and pipe.peer_certificate != trust.pinned_der:
        raise DialError(f"dial {address} over TCP: the server presented another certificate than the pinned one")


class DatagramPipe(asyncio.Protocol):
    """One TLS-over-TCP connection carrying length-prefixed QUIC datagrams (see the module)."""

    def __init__(self, *, label: str | None, deliver: Callable[[bytes, int], None], batch_done: Callable[[], None],
                 lost: Callable[["DatagramPipe"], None], refusals: CauseLog) -> None:
        self.label = label
        self._refusals = refusals  # the endpoint's: one line per LOG_INTERVAL for all its pipes
        self._deliver = deliver
        self._batch_done = batch_done
        self._lost = lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._first = True
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._last_received = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.peer: HostPort | None = None  # the TCP peer
        self.dropped = 0  # datagrams dropped because TCP was behind
        self.on_made: Callable[["DatagramPipe"], None] | None = None
        self.addr: Address = ("", 0)  # its address to the endpoint (PipePaths)

    @property
    def peer_certificate(self) -> bytes | None:
        obj = self._transport.get_extra_info("ssl_object") if self._transport else None
        return obj.getpeercert(binary_form=True) if obj is not None else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        name = transport.get_extra_info("peername")
        if name:
            host = name[0][7:] if name[0].startswith("::ffff:") and "." in name[0] else name[0]
            self.peer = HostPort(host, name[1])
            if self.label is None:
                self.label = f"from {self.peer}"
        self._idle_handle = self._loop.call_later(IDLE_TIMEOUT, self._check_idle)
        if self.on_made is not None:
            self.on_made(self)

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last_received
        if idle >= IDLE_TIMEOUT:
            logger.debug("TCP pipe %s idle for %.0f s: closed", self.label, idle)
            self.close()
        else:
            self._idle_handle = self._loop.call_later(IDLE_TIMEOUT - idle, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_received = self._loop.time()
        buffer = self._buffer
        buffer += data
        start = 0
        run: list[bytes] = []  # records of one size in a row go on as one GRO-like run
        try:
            while len(buffer) - start >= RECORD.size:
                (size,) = RECORD.unpack_from(buffer, start)
                if not 0 < size <= MAX_RECORD:
                    return self.refuse(f"a record of {size} bytes (1 to {MAX_RECORD} allowed)")
                if self._first and not buffer[start + RECORD.size] & 0x80:
                    return self.refuse("its first record is not a QUIC long-header packet")
                end = start + RECORD.size + size
                if end > len(buffer):
                    break
                self._first = False
                if run and len(run[0]) != size:
                    self._deliver_run(run)
                    run = []
                run.append(bytes(buffer[start + RECORD.size:end]))
                start = end
        finally:
            if run and not self._closed:
                self._deliver_run(run)
            del buffer[:start]
            self._batch_done()

    def _deliver_run(self, run: list[bytes]) -> None:
        self._deliver(run[0] if len(run) == 1 else b"".join(run), len(run[0]))

    def refuse(self, why: str) -> None:
        """Garbage from the peer: one line (at most one per LOG_INTERVAL), then the end."""
        suppressed = self._refusals.note("refused", self._loop.time())
        if suppressed is not None:
            more = f" ({suppressed} more since)" if suppressed else ""
            logger.warning("TCP pipe %s refused: %s%s", self.label, why, more,
                           extra={"event": "tcp-pipe-refused", "peer": str(self.peer)})
        self.abort()

    def send(self, run: list[bytes]) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        if transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
            self.dropped += len(run)  # as a full router would: QUIC sees the loss and slows down
            return
        records: list[bytes] = []
        for data in run:
            records += (RECORD.pack(len(data)), data)
        transport.write(b"".join(records))  # one copy, one TLS write for the run

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def eof_received(self) -> bool:
        return False  # close

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()
        self._end()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.abort()
        self._end()

    def _end(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        self._lost(self)


class PipePaths:
    """An endpoint's pipes, each under its own address (see the module docstring).

    ``received(buffer, segment, addr)`` (a datagram, or a run of ``segment``-byte ones) and
    ``batch_done()`` are the endpoint's datagram input;
    ``lost(addr)`` tells it a pipe ended (its connections fail at once, not after the idle
    timeout)."""

    def __init__(self, *, received: Callable[[bytes, int, Address], None], batch_done: Callable[[], None],
                 lost: Callable[[Address], None]) -> None:
        self._received = received
        self._batch_done = batch_done
        self._lost = lost
        self._numbers = itertools.count(1)
        self._by_host: dict[str, DatagramPipe] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._refusals = CauseLog()

    def __len__(self) -> int:
        return len(self._by_host)

    def pipe_for(self, host: str) -> DatagramPipe | None:
        return self._by_host.get(host)

    def peer_of(self, addr: Address) -> HostPort | None:
        """The TCP peer behind a pipe address; None for a UDP address."""
        pipe = self._by_host.get(addr[0])
        return pipe.peer if pipe is not None else None

    def new_pipe(self, label: str | None) -> DatagramPipe:
        """A pipe with an address of its own (``pipe.addr``), routed once :meth:`_register` ran."""
        host = str(ipaddress.IPv6Address(_PIPE_PREFIX + next(self._numbers)))
        addr: Address = (host, 443)
        pipe = DatagramPipe(label=label, deliver=lambda data, segment: self._received(data, segment, addr),
                            batch_done=self._batch_done, lost=self._forget, refusals=self._refusals)
        pipe.addr = addr
        return pipe

    def _register(self, pipe: DatagramPipe) -> None:
        if len(self._by_host) >= MAX_PIPES:
            pipe.refuse(f"{MAX_PIPES} TCP connections are open already")
            return
        self._by_host[pipe.addr[0]] = pipe

    def _forget(self, pipe: DatagramPipe) -> None:
        if self._by_host.get(pipe.addr[0]) is pipe:
            del self._by_host[pipe.addr[0]]
            self._lost(pipe.addr)

    def close_unused(self, addr: Address) -> None:
        """The last connection over ``addr`` is gone: so is the pipe's reason to be."""
        pipe = self._by_host.get(addr[0])
        if pipe is not None:
            pipe.close()

    async def listen(self, address: HostPort, identity: TLSIdentity) -> HostPort:
        """Accept pipes on TLS-over-TCP at ``address``; the bound address."""
        loop = asyncio.get_running_loop()
        ctx = server_context(identity)

        def accepted() -> DatagramPipe:
            # routed only once its TLS handshake is done: asyncio tells a protocol nothing of
            # a handshake that failed (no connection_lost without connection_made)
            pipe = self.new_pipe(None)
            pipe.on_made = self._register
            return pipe

        try:
            server = await loop.create_server(accepted, address.host or None, address.port, ssl=ctx,
                                              ssl_handshake_timeout=HANDSHAKE_TIMEOUT, reuse_address=True)
        except OSError as exc:
            raise _bind_error(address, exc) from None
        self._servers.append(server)
        name = server.sockets[0].getsockname()
        return HostPort(address.host, name[1])

    async def dial(self, address: HostPort, trust: Trust, timeout: float) -> Address:
        """A pipe to ``address`` (TLS checked against ``trust``); its address. Raises DialError."""
        loop = asyncio.get_running_loop()
        ctx, server_name = client_context(trust, address)
        pipe = self.new_pipe(f"to {address}")
        self._register(pipe)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: pipe, address.host, address.port, ssl=ctx,
                                             server_hostname=server_name or "",
                                             ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
            pipe.peer = address  # as dialed: the engines name the server so
            check_pin(pipe, trust, address)
        except BaseException as exc:
            pipe.abort()
            self._forget(pipe)
            if isinstance(exc, TimeoutError):
                raise DialError(f"dial {address} over TCP: timed out") from None
            if isinstance(exc, ssl.SSLError):
                raise DialError(f"dial {address} over TCP: TLS failed: {exc.reason or exc}") from None
            if isinstance(exc, OSError):
                raise DialError(f"dial {address} over TCP: {exc.strerror or exc}") from None
            raise
        return pipe.addr

    def close(self, abort: bool = False) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        for pipe in list(self._by_host.values()):
            pipe.abort() if abort else pipe.close()


def _bind_error(address: HostPort, exc: OSError) -> Exception:
    return TransportError(f"cannot bind TCP {address}: {exc.strerror or exc}")


class TcpPaths:
    """The endpoint's TCP half (:class:`connet_quic.router.QuicEndpoint` inherits it): accept
    and dial QUIC over pipes. Uses the endpoint's ``_pipes``, ``_identity``, ``_by_remote``
    and its dial after resolving, ``_dial_path``."""

    _pipes: PipePaths
    _identity: TLSIdentity | None
    _closed: bool
    _by_remote: dict[Address, set["QuicEndpointConnection"]]

    async def listen_tcp(self, address: HostPort) -> HostPort:
        """Also accept QUIC over TLS-over-TCP at ``address`` (the endpoint's certificate is
        the outer one); the bound address. Raises TransportError."""
        if self._identity is None or self._closed:
            raise TransportError("only an open endpoint with a TLS identity accepts over TCP")
        return await self._pipes.listen(address, self._identity)

    async def dial_tcp(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> "QuicEndpointConnection":
        """As ``dial``, through a TLS-over-TCP pipe to ``address`` whose certificate is
        checked against ``trust`` as the QUIC handshake's is. Raises DialError."""
        if self._closed:
            raise DialError("endpoint is closed")
        loop = asyncio.get_running_loop()
        total = timeout if timeout is not None else self._options.handshake_timeout  # type: ignore[attr-defined]
        started = loop.time()
        remote = await self._pipes.dial(address, trust, total)
        if self._pipes.pipe_for(remote[0]) is None:  # the server hung up at once (over its cap)
            raise DialError(f"dial {address} over TCP: the server closed the connection")
        remaining = max(0.1, total - (loop.time() - started))
        return await self._dial_path(remote, address, alpn=alpn, trust=trust, timeout=remaining)  # type: ignore[attr-defined]

    def _pipe_lost(self, addr: Address) -> None:
        """A pipe ended: its connections fail now, not at their idle timeout."""
        for connection in list(self._by_remote.get(addr, ())):
            connection.fail(CloseCode.TIMEOUT, "the TCP connection carrying it ended")

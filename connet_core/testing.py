"""An in-memory implementation of the transport seam, for fast engine unit tests.

::

    network = MemoryNetwork()
    hooks = plugins.load_hooks(extra_plugins=[memory_transport_plugin(network)])
    transport = hooks.transport("memory")            # or network.transport()
    server = await transport.bind(HostPort("", 0), identity=identity, alpns=["connet-control/1"])
    client = await transport.bind(HostPort("", 0), identity=None, alpns=[])
    conn = await client.dial(server.local_address, alpn="connet-control/1",
                             trust=Trust(server_name="connet-peer", pinned_der=der))

How it models QUIC (and where it does not):

- Addresses: a host of ``""``, ``0.0.0.0``, ``::``, ``localhost`` or ``::1`` means the
  network's ``default_host`` (``127.0.0.1``); other hosts are kept, so a test can give
  endpoints distinct IPs. Port 0 allocates a free port on that host. Binding a taken
  address raises TransportError.
- Dialing needs a live endpoint at the address that was bound with the ALPN; otherwise
  DialError at once (no handshake timeout is waited out). The listener's certificate is
  checked like TLS would: ``Trust.pinned_der`` must equal it exactly; with ``cafile`` it
  must be one of, or directly issued by one of, those CAs; there is no default trust store
  (DialError). ``server_name``, when given, must be in the certificate's subject
  alternative names; validity dates are checked.
- A stream becomes visible to the peer's ``accept_stream`` with its first write,
  ``write_eof`` or ``reset`` — as in QUIC, where opening a stream sends nothing. A
  protocol in which the opener waits for the acceptor to speak first deadlocks here just
  as it would over QUIC.
- ``write`` queues the bytes in the peer's receive buffer, then waits while that buffer
  holds more than ``options.stream_send_buffer`` unread bytes (backpressure).
  ``open_stream`` waits while the peer's ``options.max_streams`` of this side's streams
  are still open (MAX_STREAMS).
- ``reset(code)`` discards unread data: the peer's reads raise ``StreamReset(code)`` and
  its writes too (STOP_SENDING). ``close(code, reason)`` closes both sides: the peer's
  operations raise ``ConnectionLost(code, reason, by_peer=True)``; data, FIN and resets
  that already arrived stay readable first.
- ``partition(a, b)`` cuts the path between two endpoint addresses: nothing crosses it in
  either direction (reads, accepts and streams see nothing new; a ``close`` does not reach
  the peer). Each side of a connection across the cut closes itself with
  ``CloseCode.TIMEOUT`` (``by_peer=False``) after its endpoint's ``options.idle_timeout``,
  as a QUIC idle timeout would; new dials across it fail with DialError after the dial
  timeout (``timeout`` or ``options.handshake_timeout``). ``heal(a, b)`` restores the path
  before that: held data is delivered, timers are cancelled, and a side whose peer already
  timed out learns of it. Simplification: data that arrived before the cut but was not yet
  read is held too. ``partition``/``heal`` must be called from the running event loop.
- RTT is a fixed small number (``default_rtt``; ``set_rtt(a, b, seconds)`` changes it for one
  pair); byte counters count stream payload only. Keepalives are not modelled: an idle
  connection that is not partitioned never times out.

No tasks are created: every wait is on a future that the state change resolves.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections import deque
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from connet_core import hookimpl
from connet_core.errors import ConnectionLost, DialError, StreamReset, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo, ConnectionStats, TLSIdentity, TransportOptions, Trust

__all__ = [
    "MemoryConnection",
    "MemoryEndpoint",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryTransport",
    "MemoryTransportPlugin",
    "make_test_certificate",
    "memory_transport_plugin",
]

_LOCAL_ALIASES = frozenset({"", "0.0.0.0", "::", "localhost", "::1"})
_FIRST_PORT = 49152


class _Signal:
    """Wakes every current waiter on each ``fire``; waiters re-check their condition.

    ``fire`` is synchronous, so sync methods (close, reset) can wake waiters too."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    async def wait(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)

    def fire(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)


class _Pipe:
    """One direction of a stream: what the writer sent and the reader has not read."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.fin = False  # the writer sent FIN
        self.reset_code: int | None = None  # the writer reset (RESET_STREAM): reads raise
        self.stop_code: int | None = None  # the reader reset (STOP_SENDING): writes raise

    def done(self) -> bool:
        return self.reset_code is not None or self.stop_code is not None or (self.fin and not self.buffer)


class MemoryStream:
    def __init__(self, conn: "MemoryConnection", stream_id: int, inbound: _Pipe, outbound: _Pipe) -> None:
        self._conn = conn
        self._id = stream_id
        self._inbound = inbound
        self._outbound = outbound
        self._local_reset: int | None = None
        self._twin: MemoryStream | None = None  # the peer's half, until the peer learns of it

    @property
    def stream_id(self) -> int:
        return self._id

    def _announce(self) -> None:
        """Hand the peer its half of a stream this side opened, on first use."""
        if self._twin is not None:
            self._conn.peer._incoming.append(self._twin)
            self._twin = None

    def _raise_if_unusable(self) -> None:
        if self._local_reset is not None:
            raise StreamReset(self._local_reset)
        self._conn._raise_if_closed()
        if self._outbound.stop_code is not None and not self._conn._link.partitioned:
            raise StreamReset(self._outbound.stop_code)

    async def read(self, max_bytes: int = 65536) -> bytes:
        link = self._conn._link
        while True:
            if self._local_reset is not None:
                raise StreamReset(self._local_reset)
            if not link.partitioned:
                pipe = self._inbound
                if pipe.reset_code is not None:
                    raise StreamReset(pipe.reset_code)
                if pipe.buffer:
                    data = bytes(pipe.buffer[: max(1, max_bytes)])
                    del pipe.buffer[: len(data)]
                    link.signal.fire()  # a writer may be waiting for room
                    return data
                if pipe.fin:
                    return b""
            self._conn._raise_if_closed()
            await link.signal.wait()

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        self._raise_if_unusable()
        if self._outbound.fin:
            raise TransportError(f"stream {self._id}: write after write_eof")
        if data:
            self._outbound.buffer += data
            self._conn._bytes_sent += len(data)
            self._conn.peer._bytes_received += len(data)
            self._announce()
            self._conn._link.signal.fire()
        return len(self._outbound.buffer) <= self._conn._options.stream_send_buffer

    async def drain(self) -> None:
        bound = self._conn._options.stream_send_buffer
        while len(self._outbound.buffer) > bound:
            await self._conn._link.signal.wait()
            self._raise_if_unusable()

    async def write_eof(self) -> None:
        if self._outbound.fin:
            return
        self._raise_if_unusable()
        self._outbound.fin = True
        self._announce()
        self._conn._link.signal.fire()

    def reset(self, code: int) -> None:
        if self._local_reset is not None or self._conn.closed:
            return  # nothing left to abort
        self._local_reset = code
        self._outbound.reset_code = code
        self._outbound.buffer.clear()
        self._inbound.stop_code = code
        self._inbound.buffer.clear()
        self._announce()
        self._conn._link.signal.fire()


class _Link:
    """The shared state of one connection: both sides and what wakes them."""

    def __init__(self, network: "MemoryNetwork", dialer: "MemoryEndpoint", listener: "MemoryEndpoint") -> None:
        self.network = network
        self.signal = _Signal()
        self.addresses = frozenset({dialer.local_address, listener.local_address})
        self.partitioned = network._is_cut(dialer.local_address, listener.local_address)
        self.sides: tuple[MemoryConnection, MemoryConnection] = ()  # type: ignore[assignment]  # set by _dial


class MemoryConnection:
    def __init__(
        self,
        link: _Link,
        endpoint: "MemoryEndpoint",
        *,
        alpn: str,
        is_dialer: bool,
        remote_address: HostPort,
        peer_certificate: bytes | None,
    ) -> None:
        self._link = link
        self._endpoint = endpoint
        self._options = endpoint.options
        self._alpn = alpn
        self._is_dialer = is_dialer
        self._remote = remote_address
        self._peer_certificate = peer_certificate
        self.peer: MemoryConnection = self  # set right after both sides exist
        self._close_info: CloseInfo | None = None
        self._incoming: deque[MemoryStream] = deque()
        self._opened: list[MemoryStream] = []  # streams this side opened, for MAX_STREAMS
        self._next_stream_id = 0 if is_dialer else 1  # QUIC client/server bidirectional ids
        self._bytes_sent = 0
        self._bytes_received = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def alpn(self) -> str:
        return self._alpn

    @property
    def is_dialer(self) -> bool:
        return self._is_dialer

    @property
    def remote_address(self) -> HostPort:
        return self._remote

    @property
    def peer_certificate(self) -> bytes | None:
        return self._peer_certificate

    @property
    def closed(self) -> bool:
        return self._close_info is not None

    def stats(self) -> ConnectionStats:
        rtt = self._link.network.rtt_between(self._endpoint.local_address, self._remote)
        return ConnectionStats(bytes_sent=self._bytes_sent, bytes_received=self._bytes_received, smoothed_rtt=rtt)

    def _raise_if_closed(self) -> None:
        info = self._close_info
        if info is not None:
            raise ConnectionLost(info.code, info.reason, by_peer=info.by_peer)

    async def open_stream(self) -> MemoryStream:
        while True:
            self._raise_if_closed()
            self._opened = [s for s in self._opened if not (s._inbound.done() and s._outbound.done())]
            if len(self._opened) < self.peer._options.max_streams:
                break
            await self._link.signal.wait()
        stream_id = self._next_stream_id
        self._next_stream_id += 4
        to_peer, from_peer = _Pipe(), _Pipe()
        local = MemoryStream(self, stream_id, inbound=from_peer, outbound=to_peer)
        local._twin = MemoryStream(self.peer, stream_id, inbound=to_peer, outbound=from_peer)
        self._opened.append(local)
        return local

    async def accept_stream(self) -> MemoryStream:
        while True:
            if self._incoming and not self._link.partitioned:
                return self._incoming.popleft()
            self._raise_if_closed()
            await self._link.signal.wait()

    def stop_keepalive(self) -> None:
        """Keepalives are not modelled here (an unpartitioned connection never idles out),
        so a connection that stops them simply stays open until closed."""

    def close(self, code: int = 0, reason: str = "") -> None:
        if self._close_info is not None:
            return
        self._terminate(CloseInfo(code, reason, by_peer=False))
        if not self._link.partitioned:
            self.peer._terminate(CloseInfo(code, reason, by_peer=True))

    async def wait_closed(self) -> CloseInfo:
        while self._close_info is None:
            await self._link.signal.wait()
        return self._close_info

    def _terminate(self, info: CloseInfo) -> None:
        if self._close_info is not None:
            return
        self._close_info = info
        self._cancel_idle_timer()
        self._endpoint._forget(self)
        if self.peer.closed:
            self._link.network._links.discard(self._link)
        self._link.signal.fire()

    def _start_idle_timer(self) -> None:
        if self._close_info is None and self._idle_timer is None:
            self._idle_timer = asyncio.get_running_loop().call_later(self._options.idle_timeout, self._idle_expired)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._terminate(CloseInfo(CloseCode.TIMEOUT, "idle timeout", by_peer=False))


class MemoryEndpoint:
    def __init__(
        self,
        network: "MemoryNetwork",
        address: HostPort,
        *,
        alpns: Sequence[str],
        certificate_der: bytes | None,
        options: TransportOptions,
    ) -> None:
        self._network = network
        self._address = address
        self.alpns = tuple(alpns)
        self.certificate_der = certificate_der
        self.options = options
        self._pending: deque[MemoryConnection] = deque()
        self._connections: set[MemoryConnection] = set()
        self._signal = _Signal()
        self._closed = False

    @property
    def local_address(self) -> HostPort:
        return self._address

    async def accept(self) -> MemoryConnection:
        while True:
            if self._closed:
                raise TransportError(f"endpoint {self._address} is closed")
            if self._pending:
                return self._pending.popleft()
            await self._signal.wait()

    async def dial(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> MemoryConnection:
        if self._closed:
            raise DialError(f"dial {address}: endpoint {self._address} is closed")
        return await self._network._dial(self, address, alpn=alpn, trust=trust, timeout=timeout)

    async def close(self, code: int = CloseCode.OK, reason: str = "endpoint closed") -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._connections):
            conn.close(code, reason)
        self._network._unbind(self)
        self._signal.fire()

    def _forget(self, conn: MemoryConnection) -> None:
        self._connections.discard(conn)


class MemoryTransport:
    """A :class:`connet_core.transport.Transport` on a :class:`MemoryNetwork`."""

    def __init__(self, network: "MemoryNetwork", name: str = "memory") -> None:
        self.name = name
        self._network = network

    async def bind(
        self,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions = TransportOptions(),
    ) -> MemoryEndpoint:
        return self._network._bind(address, identity=identity, alpns=alpns, options=options)


class MemoryNetwork:
    """A set of in-memory endpoints that can dial each other (see the module docstring)."""

    def __init__(self, default_host: str = "127.0.0.1", default_rtt: float = 0.001) -> None:
        self.default_host = default_host
        self.default_rtt = default_rtt
        self._endpoints: dict[HostPort, MemoryEndpoint] = {}
        self._links: set[_Link] = set()
        self._cuts: set[frozenset[HostPort]] = set()
        self._rtts: dict[frozenset[HostPort], float] = {}
        self._changed = _Signal()  # a heal: dials waiting across a cut re-check

    def transport(self, name: str = "memory") -> MemoryTransport:
        return MemoryTransport(self, name)

    # --- addresses ----------------------------------------------------------------------

    def canonical(self, address: HostPort) -> HostPort:
        """The network's spelling of ``address`` (aliases of the default host folded)."""
        address = address.normalized()
        if address.host.lower() in _LOCAL_ALIASES:
            return HostPort(self.default_host, address.port)
        return address

    def _free_port(self, host: str) -> int:
        port = _FIRST_PORT
        while HostPort(host, port) in self._endpoints:
            port += 1
        if port > 65535:
            raise TransportError(f"no free port left on memory host {host}")
        return port

    def _bind(
        self,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions,
    ) -> MemoryEndpoint:
        address = self.canonical(address)
        if address.port == 0:
            address = HostPort(address.host, self._free_port(address.host))
        elif address in self._endpoints:
            raise TransportError(f"bind {address}: address already in use")
        certificate_der = None
        if identity is not None:
            certificate_der = _leaf_der(identity)
        elif alpns:
            raise TransportError(f"bind {address}: listening for {', '.join(alpns)} needs a TLS identity")
        endpoint = MemoryEndpoint(self, address, alpns=alpns, certificate_der=certificate_der, options=options)
        self._endpoints[address] = endpoint
        return endpoint

    def _unbind(self, endpoint: MemoryEndpoint) -> None:
        if self._endpoints.get(endpoint.local_address) is endpoint:
            del self._endpoints[endpoint.local_address]

    # --- dialing ------------------------------------------------------------------------

    async def _dial(
        self, dialer: MemoryEndpoint, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None
    ) -> MemoryConnection:
        target = self.canonical(address)
        if self._is_cut(dialer.local_address, target):
            limit = dialer.options.handshake_timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(limit):
                    while self._is_cut(dialer.local_address, target):
                        await self._changed.wait()
            except TimeoutError:
                raise DialError(f"dial {address}: handshake timeout (the path is partitioned)") from None
        listener = self._endpoints.get(target)
        if listener is None:
            raise DialError(f"dial {address}: nothing listens there")
        if alpn not in listener.alpns:
            raise DialError(f"dial {address}: ALPN {alpn!r} is not accepted there")
        assert listener.certificate_der is not None  # _bind refuses alpns without an identity
        _check_trust(listener.certificate_der, trust, address)

        link = _Link(self, dialer, listener)
        near = MemoryConnection(
            link, dialer, alpn=alpn, is_dialer=True, remote_address=target, peer_certificate=listener.certificate_der
        )
        far = MemoryConnection(
            link, listener, alpn=alpn, is_dialer=False, remote_address=dialer.local_address, peer_certificate=None
        )
        near.peer, far.peer = far, near
        link.sides = (near, far)
        self._links.add(link)
        dialer._connections.add(near)
        listener._connections.add(far)
        listener._pending.append(far)
        listener._signal.fire()
        return near

    # --- path control -------------------------------------------------------------------

    def _is_cut(self, a: HostPort, b: HostPort) -> bool:
        return frozenset({a, b}) in self._cuts

    def partition(self, a: HostPort, b: HostPort) -> None:
        """Cut the path between the endpoints at ``a`` and ``b`` (see the module docstring)."""
        pair = frozenset({self.canonical(a), self.canonical(b)})
        self._cuts.add(pair)
        for link in list(self._links):
            if link.addresses == pair and not link.partitioned:
                link.partitioned = True
                for side in link.sides:
                    side._start_idle_timer()

    def heal(self, a: HostPort, b: HostPort) -> None:
        """Restore the path between ``a`` and ``b``."""
        pair = frozenset({self.canonical(a), self.canonical(b)})
        self._cuts.discard(pair)
        for link in list(self._links):
            if link.addresses == pair and link.partitioned:
                link.partitioned = False
                for side in link.sides:
                    side._cancel_idle_timer()
                for side in link.sides:
                    # the other side closed while cut off: that close (or a stateless reset) arrives now
                    info = side.peer._close_info
                    if info is not None and not side.closed:
                        side._terminate(CloseInfo(info.code, info.reason, by_peer=True))
                link.signal.fire()
        self._changed.fire()

    def set_rtt(self, a: HostPort, b: HostPort, seconds: float) -> None:
        """The smoothed RTT connections between ``a`` and ``b`` report from now on."""
        self._rtts[frozenset({self.canonical(a), self.canonical(b)})] = seconds

    def rtt_between(self, a: HostPort, b: HostPort) -> float:
        return self._rtts.get(frozenset({self.canonical(a), self.canonical(b)}), self.default_rtt)


def _leaf_der(identity: TLSIdentity) -> bytes:
    try:
        chain = x509.load_pem_x509_certificates(identity.cert_pem)
    except ValueError as exc:
        raise TransportError(f"the TLS identity's certificate is not valid PEM: {exc}") from None
    return chain[0].public_bytes(Encoding.DER)


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    if leaf == ca:
        return True
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _names_match(leaf: x509.Certificate, server_name: str) -> bool:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False  # like modern TLS stacks: the common name is not checked
    try:
        wanted_ip = ipaddress.ip_address(server_name)
    except ValueError:
        wanted_ip = None
    if wanted_ip is not None:
        return wanted_ip in san.get_values_for_type(x509.IPAddress)
    wanted = server_name.lower().rstrip(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _check_trust(listener_der: bytes, trust: Trust, address: HostPort) -> None:
    """Raise DialError unless ``trust`` accepts the listener's certificate."""
    leaf = x509.load_der_x509_certificate(listener_der)
    if trust.pinned_der is not None:
        if trust.pinned_der != listener_der:
            raise DialError(f"dial {address}: the certificate is not the pinned one")
    elif trust.cafile is not None:
        try:
            cas = x509.load_pem_x509_certificates(Path(trust.cafile).read_bytes())
        except OSError as exc:
            raise DialError(f"dial {address}: CA file {trust.cafile} cannot be read: {exc.strerror}") from None
        except ValueError:
            raise DialError(f"dial {address}: CA file {trust.cafile} holds no PEM certificate") from None
        if not any(_issued_by(leaf, ca) for ca in cas):
            raise DialError(f"dial {address}: the certificate is not signed by a CA in {trust.cafile}")
    else:
        raise DialError(f"dial {address}: the memory transport has no default trust store (pin or give cafile)")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise DialError(f"dial {address}: the certificate is outside its validity period")
    if trust.server_name is not None and not _names_match(leaf, trust.server_name):
        raise DialError(f"dial {address}: the certificate does not name {trust.server_name!r}")


class MemoryTransportPlugin:
    """Hook implementations that provide ``network``'s transport under ``name``."""

    def __init__(self, network: MemoryNetwork, name: str = "memory") -> None:
        self.name = name
        self._transport = network.transport(name)

    @hookimpl
    def connet_transport_names(self) -> list[str]:
        return [self.name]

    @hookimpl
    def connet_transport(self, name: str) -> MemoryTransport | None:
        return self._transport if name == self.name else None


def memory_transport_plugin(network: MemoryNetwork, name: str = "memory") -> MemoryTransportPlugin:
    """A plugin object for ``plugins.load_hooks(extra_plugins=[...])``."""
    return MemoryTransportPlugin(network, name)


def make_test_certificate(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[TLSIdentity, bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for tests that names ``name`` in its subject alternative name: self-signed
    (and a CA) without ``issuer``, else signed by ``issuer`` (certificate, key). Returns the
    PEM identity, the DER certificate, the certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    identity = TLSIdentity(
        cert_pem=cert.public_bytes(Encoding.PEM),
        key_pem=key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    )
    return identity, cert.public_bytes(Encoding.DER), cert, key

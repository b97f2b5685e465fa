"""Endpoints, the transport and the network: binding addresses, dialing (the listener's
ALPNs and certificate checked as a QUIC handshake would), and the path control a test
uses (``partition``, ``heal``, ``set_rtt``). What a connection does once dialed is in
``streams``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Sequence

from connet_core.errors import DialError, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.testing.signals import _Signal
from connet_core.testing.streams import MemoryConnection, _Link
from connet_core.testing.trust import _check_trust, _leaf_der
from connet_core.transport import CloseInfo, TLSIdentity, TransportOptions, Trust

__all__ = ["MemoryEndpoint", "MemoryNetwork", "MemoryTransport"]

_LOCAL_ALIASES = frozenset({"", "0.0.0.0", "::", "localhost", "::1"})
_FIRST_PORT = 49152  # port 0 allocates from the IANA dynamic range, as an OS would


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

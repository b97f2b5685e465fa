"""Both sides of a memory connection and their streams: the glue a test's reads and writes
go through (pipes, backpressure, MAX_STREAMS, reset, close, the idle timeout of a
partitioned connection).

A connection is created by ``network.MemoryNetwork`` and needs a little from it and from
its endpoint; ``_Network`` and ``_Endpoint`` name exactly that, so this module does not
import ``network`` and the dependency points one way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from connet_core.errors import ConnectionLost, StreamReset, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.testing.datagrams import MemoryDatagrams
from connet_core.testing.signals import _Signal
from connet_core.transport import CloseInfo, ConnectionStats, TransportOptions

__all__ = ["MemoryConnection", "MemoryStream"]


class _Network(Protocol):
    """What a connection uses of ``network.MemoryNetwork``."""

    _links: set[_Link]

    def _is_cut(self, a: HostPort, b: HostPort) -> bool: ...

    def rtt_between(self, a: HostPort, b: HostPort) -> float: ...


class _Endpoint(Protocol):
    """What a connection uses of ``network.MemoryEndpoint``."""

    options: TransportOptions

    @property
    def local_address(self) -> HostPort: ...

    def _forget(self, conn: MemoryConnection) -> None: ...


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

    def __init__(self, network: _Network, dialer: _Endpoint, listener: _Endpoint) -> None:
        self.network = network
        self.signal = _Signal()
        self.addresses = frozenset({dialer.local_address, listener.local_address})
        self.partitioned = network._is_cut(dialer.local_address, listener.local_address)
        self.sides: tuple[MemoryConnection, MemoryConnection] = ()  # type: ignore[assignment]  # set by _dial


class MemoryConnection:
    def __init__(
        self,
        link: _Link,
        endpoint: _Endpoint,
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
        self.datagrams = MemoryDatagrams(self)

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



"""One UDP socket that both accepts and dials QUIC connections, on a sans-I/O QUIC library.

Datagrams are routed by destination connection ID to connections of both roles (the map
of aioquic's asyncio server, extended to client-role connections). The socket is read and
written in batches (:mod:`connet_quic._udp`: GRO, GSO): a connection answers a whole read
batch at once, and a GRO run of its datagrams reaches the library in one call where the
library takes runs. Each connection has one timer, which drives the library's timer
(pacing included), the keepalive and the handshake deadline. Streams are our own glue on
the library's events, with backpressure in both directions (see ``_aioquic.py`` for the
receive side).

Addresses are kept in one canonical form, ``(host, port)`` with IPv4-mapped IPv6 folded to
IPv4, because a client-role connection drops datagrams from any address but the one it
dialed, and a dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d``.

Stateless reset (RFC 9000 10.3, :mod:`connet_quic._reset`): a short-header datagram that
routes to no connection is first checked for being a reset of one of ours (its last 16
bytes against the reset tokens the peers at that address gave us); if it is none, it is
answered with a reset of its own, rate-limited and always shorter than the trigger.

Admission (:mod:`connet_quic.admission`): a client Initial that routes to no connection is
accepted, answered with a Retry (address validation, when under load) or dropped before the
library sees it, so that a flood of them cannot take the CPU and memory that established
connections and real clients need. What is dropped is counted (``counters``, exported by the
engines' status) and logged at most once per cause per ``CauseLog`` interval.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import os
import socket
from typing import Any, Callable, Generic, Sequence, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connet_core.errors import ConnectionLost, DialError, StreamReset, TransportError
from connet_core.files import FileRefused, read_file
from connet_core.model import HostPort, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo, ConnectionStats, TLSIdentity, Trust, TransportOptions

from connet_quic._aioquic import AioquicLibrary
from connet_quic._adapter import CONNECTION_ID_LENGTH
from connet_quic._udp import BatchedUdpSocket, segments, size_buffers
from connet_quic._reset import ResetKey, TokenBucket, reset_token_of, stateless_reset
from connet_quic import _memory
from connet_quic.admission import Admission, Ticket, Verdict, retry_packet
from connet_quic.refusals import Refusals, limit_library_log

logger = logging.getLogger("connet.quic")

Address = tuple[str, int]  # canonical: IPv4-mapped folded to IPv4, no flow info / scope tuple fields
DatagramFilter = Callable[[HostPort, bool], bool]
T = TypeVar("T")

# Half-open accepted handshakes (each costs ~90 KiB of aioquic state) are capped and
# budgeted per source by connet_quic.admission, which asks for a Retry under load.
# Stateless resets we send, per endpoint: they are never larger than their trigger, so this
# bounds only the work an unknown-CID flood costs us. Generous enough that a restarted
# server resets a thousand clients within seconds (each keepalive is a new chance).
RESET_RATE = 200.0  # per second
RESET_BURST = 50
# Version Negotiation packets we send (answers to >= 1200-byte datagrams of other versions)
VERSION_NEGOTIATION_RATE = 100.0  # per second
VERSION_NEGOTIATION_BURST = 50
# how early the event loop may run a timer (uvloop/libuv count in milliseconds)
TIMER_SLACK = 0.001


def _canonical(raw: Any) -> Address:
    host = raw[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, raw[1])


class _Inbox(Generic[T]):
    """A FIFO whose consumers wake with an exception once it is closed."""

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    def put(self, item: T) -> None:
        self._items.append(item)
        self._wake()

    def close(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class QuicEndpointStream:
    """A bidirectional stream (implements :class:`connet_core.transport.Stream`)."""

    def __init__(self, connection: "QuicEndpointConnection", stream_id: int) -> None:
        self._connection = connection
        self._stream_id = stream_id
        # delivered, unread data as the library handed it over: read() joins what it
        # returns in one copy (a bytearray buffer would copy every byte twice)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof_received = False
        self._read_reset_code: int | None = None  # the peer reset its sending side
        self._write_reset_code: int | None = None  # the peer sent STOP_SENDING
        self._reset_locally = False
        self._local_reset_code = 0  # what our own reads/writes raise after reset()
        self._eof_sent = False
        self._read_waiter: asyncio.Future[None] | None = None
        # every drain() waiting for room (end-to-end TLS may flush while the TCP end drains)
        self._write_waiters: list[asyncio.Future[None]] = []

    @property
    def stream_id(self) -> int:
        return self._stream_id

    def __repr__(self) -> str:
        return f"<QuicEndpointStream {self._stream_id}>"

    # called by the connection

    def _feed(self, data: bytes, end_stream: bool) -> None:
        if self._reset_locally or self._read_reset_code is not None:
            return  # credited at once by the connection
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof_received = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_writer(self) -> None:
        for waiter in self._write_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _on_reset(self, code: int) -> None:
        self._read_reset_code = code
        self._connection._discard_unread(self)
        self._wake_reader()

    def _on_stop_sending(self, code: int) -> None:
        self._write_reset_code = code
        self._wake_writer()

    def _unread(self) -> int:
        return self._buffered

    def _clear_unread(self) -> int:
        n = self._buffered
        self._chunks.clear()
        self._buffered = 0
        return n

    # the Stream API

    async def read(self, max_bytes: int = 65536) -> bytes:
        connection = self._connection
        while not self._buffered:
            if self._read_reset_code is not None:
                raise StreamReset(self._read_reset_code)
            if self._reset_locally:
                raise StreamReset(self._local_reset_code)
            if self._eof_received:
                connection._forget_if_done(self)
                return b""
            connection._raise_if_closed()
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._read_reset_code is not None:
            raise StreamReset(self._read_reset_code)
        connection._raise_if_closed()
        data = self._take(max_bytes)
        connection._consumed(self, len(data))
        return data

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        if self._buffered <= max_bytes:
            data = chunks.pop() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            return data
        parts = []
        need = max_bytes
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                parts.append(chunks.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                chunks[0] = chunk[need:]
                need = 0
        self._buffered -= max_bytes
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        connection = self._connection
        self._check_writable()
        if data:
            connection._send(self._stream_id, data, False)
        return connection._unsent(self._stream_id) <= connection._options.stream_send_buffer

    async def drain(self) -> None:
        connection = self._connection
        bound = connection._options.stream_send_buffer
        while connection._unsent(self._stream_id) > bound:
            waiter = asyncio.get_running_loop().create_future()
            self._write_waiters.append(waiter)
            connection._blocked_writers.add(self)
            try:
                await waiter
            finally:
                self._write_waiters.remove(waiter)
                if not self._write_waiters:
                    connection._blocked_writers.discard(self)
            self._check_writable()

    def _check_writable(self) -> None:
        self._connection._raise_if_closed()
        if self._write_reset_code is not None:
            raise StreamReset(self._write_reset_code)
        if self._reset_locally:
            raise StreamReset(self._local_reset_code)
        if self._eof_sent:
            raise TransportError(f"stream {self._stream_id}: write after write_eof")

    async def write_eof(self) -> None:
        # async only to match the seam (a layered stream may have to write first); never waits
        if self._eof_sent or self._reset_locally or self._write_reset_code is not None:
            return
        if self._connection.closed:
            return
        self._eof_sent = True
        self._connection._send(self._stream_id, b"", True)
        self._connection._forget_if_done(self)

    def reset(self, code: int) -> None:
        if self._reset_locally:
            return
        self._reset_locally = True
        self._local_reset_code = code
        self._connection._reset_stream(self, code)
        self._wake_reader()
        self._wake_writer()

    # lifecycle for the connection's stream map
    def _done(self) -> bool:
        read_done = self._eof_received or self._read_reset_code is not None or self._reset_locally
        write_done = self._eof_sent or self._write_reset_code is not None or self._reset_locally
        return read_done and write_done


class QuicEndpointConnection:
    """One QUIC connection of either role (implements :class:`connet_core.transport.Connection`)."""

    def __init__(
        self,
        endpoint: "QuicEndpoint",
        quic: Any,
        *,
        is_dialer: bool,
        remote: Address,
        handshake_deadline: float,
        pinned_der: bytes | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._lib: AioquicLibrary = endpoint._lib
        self._quic = quic
        self._loop = endpoint._loop
        self._options = endpoint._options
        self._is_dialer = is_dialer
        self._remote = remote
        self._pinned_hash = certificate_hash(pinned_der) if pinned_der is not None else None
        self._alpn = ""
        self._peer_certificate: bytes | None = None
        self._cids: set[bytes] = set()
        self._streams: dict[int, QuicEndpointStream] = {}
        # peer-initiated bidirectional streams: client-initiated ids are 0 mod 4
        self._next_peer_stream_id = 1 if is_dialer else 0
        self._incoming_streams: _Inbox[QuicEndpointStream] = _Inbox()
        self._blocked_writers: set[QuicEndpointStream] = set()
        self._handshake_deadline: float | None = handshake_deadline
        self._handshake_done: asyncio.Future[None] = self._loop.create_future()
        self._next_ping_at: float | None = None
        self._keepalive_stopped = False
        self._ping_uid = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clock = 0.0  # the latest time given to the library
        self._transmit_handle: asyncio.Handle | None = None
        self._bytes_sent = 0
        self._bytes_received = 0
        self._close_info: CloseInfo | None = None
        self._closed_event = asyncio.Event()
        self._terminated = False
        self._completed = False  # the handshake completed (not: failed)
        # an accepted connection closed before its handshake completed is forgotten as soon as
        # its CONNECTION_CLOSE left, not after the closing period (3 PTO): see _transmit
        self._forget_once_sent = False

    def __repr__(self) -> str:
        role = "dialed" if self._is_dialer else "accepted"
        return f"<QuicEndpointConnection {role} {HostPort(*self._remote)} {self._alpn}>"

    # Connection API

    @property
    def alpn(self) -> str:
        return self._alpn

    @property
    def is_dialer(self) -> bool:
        return self._is_dialer

    @property
    def remote_address(self) -> HostPort:
        return HostPort(*self._remote)

    @property
    def peer_certificate(self) -> bytes | None:
        return self._peer_certificate

    @property
    def closed(self) -> bool:
        return self._close_info is not None

    def stats(self) -> ConnectionStats:
        return ConnectionStats(
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            smoothed_rtt=self._lib.smoothed_rtt(self._quic),
        )

    async def open_stream(self) -> QuicEndpointStream:
        self._raise_if_closed()
        stream_id = self._lib.open_stream(self._quic)
        stream = self._streams[stream_id] = QuicEndpointStream(self, stream_id)
        return stream

    async def accept_stream(self) -> QuicEndpointStream:
        return await self._incoming_streams.get()

    def stop_keepalive(self) -> None:
        # no more pings: once both ends are quiet the idle timeout closes the connection,
        # after every byte in flight was delivered (a CONNECTION_CLOSE would discard them)
        self._next_ping_at = None
        self._keepalive_stopped = True

    def close(self, code: int = CloseCode.OK, reason: str = "") -> None:
        if self._close_info is not None:
            return
        self._quic.close(error_code=int(code), reason_phrase=reason)
        self._mark_closed(CloseInfo(int(code), reason, by_peer=False))
        self._transmit()

    async def wait_closed(self) -> CloseInfo:
        await self._closed_event.wait()
        assert self._close_info is not None
        return self._close_info

    # glue used by streams

    def _raise_if_closed(self) -> None:
        info = self._close_info
        if info is not None:
            raise ConnectionLost(info.code, info.reason, info.by_peer)

    def _send(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream)
        self._transmit_soon()

    def _unsent(self, stream_id: int) -> int:
        return self._lib.unsent(self._quic, stream_id)

    def _consumed(self, stream: QuicEndpointStream, n: int) -> None:
        quic = self._quic
        stream_id = stream.stream_id
        left = quic.unread_by_stream.get(stream_id, 0) - n
        if left > 0:
            quic.unread_by_stream[stream_id] = left
        else:
            quic.unread_by_stream.pop(stream_id, None)
        quic.unread_total -= n
        if quic.stream_credit_due(stream_id):
            self._transmit_soon()

    def _discard_unread(self, stream: QuicEndpointStream) -> None:
        n = stream._clear_unread()
        quic = self._quic
        quic.unread_by_stream.pop(stream.stream_id, None)
        quic.unread_total -= n
        self._forget_if_done(stream)

    def _reset_stream(self, stream: QuicEndpointStream, code: int) -> None:
        self._discard_unread(stream)
        if self._close_info is not None:
            return
        stream_id = stream.stream_id
        quic = self._quic
        try:
            if not stream._eof_sent and stream._write_reset_code is None:
                quic.reset_stream(stream_id, code)
            if not stream._eof_received and stream._read_reset_code is None:
                quic.stop_stream(stream_id, code)
        except ValueError:
            # the library already discarded the stream: nothing left to abort
            logger.debug("reset of finished stream %d ignored", stream_id)
        self._forget_if_done(stream)
        self._transmit_soon()

    def _forget_if_done(self, stream: QuicEndpointStream) -> None:
        if stream._done() and not stream._buffered:
            self._streams.pop(stream.stream_id, None)

    # I/O driven by the endpoint

    def _library_time(self, at_least: float = 0.0) -> float:
        """The time to give the library: the loop's clock, never earlier than a time we
        already gave it (a timer may act slightly ahead, see _on_timer; qh3 refuses a
        clock that goes back)."""
        now = self._loop.time()
        if now < at_least:
            now = at_least
        if now < self._clock:
            return self._clock
        self._clock = now
        return now

    def _datagram_received(self, data: bytes, addr: Address) -> None:
        # the answer leaves when the endpoint finished the read batch (one ACK for many)
        self._bytes_received += len(data)
        self._quic.receive_datagram(data, addr, self._library_time())
        self._process_events(in_timer=False)

    def _segments_received(self, buffer: bytes, segment: int, addr: Address) -> None:
        """A GRO run of this connection's datagrams (see QuicEndpoint._run_owner)."""
        self._bytes_received += len(buffer)
        self._lib.receive_segments(self._quic, buffer, segment, addr, self._library_time())
        self._process_events(in_timer=False)

    def _transmit_soon(self) -> None:
        if self._transmit_handle is None and not self._terminated:
            self._transmit_handle = self._loop.call_soon(self._transmit)

    def _transmit(self, now: float | None = None) -> None:
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        if self._terminated:
            return
        if now is None:
            now = self._library_time()
        if self._lib.release_held(self._quic, now):
            # qh3 held datagrams back while a reader was behind (see _qh3.py)
            self._process_events(in_timer=False)
            if self._terminated:
                return
        datagrams = self._quic.datagrams_to_send(now)
        if datagrams:
            self._endpoint._send_datagrams(self, datagrams)
        if self._forget_once_sent:
            # A failed handshake of a client nobody knows (wrong ALPN, a flood): its
            # CONNECTION_CLOSE just left; lingering in the closing period to repeat it would
            # hold ~90 KiB per handshake for seconds. If the close is lost, the client's
            # handshake times out.
            self._terminate()
            return
        if self._blocked_writers:
            bound = self._options.stream_send_buffer
            for stream in list(self._blocked_writers):
                if self._unsent(stream.stream_id) <= bound:
                    stream._wake_writer()
        self._arm_timer()

    def _arm_timer(self) -> None:
        due = self._quic.get_timer()
        if self._handshake_deadline is not None and (due is None or self._handshake_deadline < due):
            due = self._handshake_deadline
        if self._next_ping_at is not None and (due is None or self._next_ping_at < due):
            due = self._next_ping_at
        admit = self._lib.next_admission(self._quic)  # qh3's trickle while holding (see _qh3.py)
        if admit is not None and (due is None or admit < due):
            due = admit
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = due
        if due is not None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        QuicEndpoint._contained(self, "in its timer", self._timer_due)

    def _timer_due(self) -> None:
        now = self._library_time()
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            self._on_handshake_timeout()
        if self._next_ping_at is not None and now >= self._next_ping_at and self._close_info is None:
            self._ping_uid += 1
            self._lib.send_keepalive(self._quic, self._ping_uid)
            self._next_ping_at = now + self._options.keepalive_interval
        quic_due = self._quic.get_timer()
        if quic_due is not None and now < quic_due <= now + TIMER_SLACK:
            # the loop woke us early (its timers have ~1 ms resolution, the pacer's
            # gaps are microseconds): act as at the due time instead of re-arming
            # the same timer and spinning until the clock gets there
            now = self._library_time(at_least=quic_due)
        if quic_due is not None and now >= quic_due:
            self._quic.handle_timer(now)
        self._process_events(in_timer=True)
        self._transmit(now)

    def _on_handshake_timeout(self) -> None:
        if self._handshake_done.done() or self._close_info is not None:
            return
        timeout = self._options.handshake_timeout
        self._quic.close(error_code=CloseCode.TIMEOUT, reason_phrase="handshake timeout")
        self._fail_handshake(DialError(f"QUIC handshake with {HostPort(*self._remote)} timed out"))
        self._mark_closed(CloseInfo(CloseCode.TIMEOUT, "handshake timeout", by_peer=False))
        logger.debug("handshake with %s timed out after %.1fs", HostPort(*self._remote), timeout)

    def _on_stateless_reset(self) -> None:
        """The peer sent a stateless reset: it no longer knows this connection (it
        restarted). RFC 9000 10.3.1: stop at once, send nothing more."""
        logger.info("QUIC connection %r: stateless reset received (the peer restarted)", self)
        self._fail_handshake(DialError(f"QUIC handshake with {HostPort(*self._remote)} failed: peer reset"))
        self._mark_closed(CloseInfo(CloseCode.PEER_RESET, "stateless reset: the peer restarted", by_peer=True))
        self._terminate()

    def _abort(self, code: int, reason: str) -> None:
        """Close at once, for failures of our own: no drain period to wait out."""
        self._fail_handshake(DialError(f"QUIC connection to {HostPort(*self._remote)} failed: {reason}"))
        self._mark_closed(CloseInfo(code, reason, by_peer=False))
        self._terminate()

    # events

    def _process_events(self, *, in_timer: bool) -> None:
        quic = self._quic
        ev = self._lib.events
        while (event := quic.next_event()) is not None:
            kind = type(event)
            if kind is ev.StreamDataReceived:
                self._on_stream_data(event.stream_id, event.data, event.end_stream)
            elif kind is ev.ConnectionIdIssued:
                self._endpoint._register_cid(self, event.connection_id)
            elif kind is ev.ConnectionIdRetired:
                self._endpoint._unregister_cid(self, event.connection_id)
            elif kind is ev.StreamReset:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_reset(event.error_code)
            elif kind is ev.StopSendingReceived:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._on_stop_sending(event.error_code)
                    self._forget_if_done(stream)
            elif kind is ev.HandshakeCompleted:
                self._on_handshake_completed(event.alpn_protocol or "")
            elif kind is ev.ConnectionTerminated:
                self._notice_close(in_timer=in_timer)
                self._terminate()
                return
        if self._close_info is None and self._lib.close_event(quic) is not None:
            self._notice_close(in_timer=in_timer)

    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        quic = self._quic
        stream = self._streams.get(stream_id)
        if stream is None and stream_id % 4 == self._next_peer_stream_id % 4 and stream_id >= self._next_peer_stream_id:
            # a new peer stream opens every lower-numbered one too (RFC 9000 2.1)
            for new_id in range(self._next_peer_stream_id, stream_id + 4, 4):
                new_stream = self._streams[new_id] = QuicEndpointStream(self, new_id)
                self._incoming_streams.put(new_stream)
            self._next_peer_stream_id = stream_id + 4
            stream = self._streams[stream_id]
        if stream is None or stream._reset_locally or stream._read_reset_code is not None:
            # nobody will read it: credit it back at once (it only counted as received)
            if end_stream and stream is not None:
                stream._eof_received = True
                self._forget_if_done(stream)
            return
        if data:
            quic.unread_by_stream[stream_id] = quic.unread_by_stream.get(stream_id, 0) + len(data)
            quic.unread_total += len(data)
        stream._feed(data, end_stream)

    def _on_handshake_completed(self, alpn: str) -> None:
        self._completed = True
        self._alpn = alpn
        self._handshake_deadline = None
        if self._is_dialer:
            der = self._lib.peer_certificate_der(self._quic)
            self._peer_certificate = der
            if self._pinned_hash is not None and (der is None or certificate_hash(der) != self._pinned_hash):
                # cadata made the pin a trust anchor; only this makes it an exact match
                self._fail_handshake(
                    DialError(f"{HostPort(*self._remote)} presented a certificate other than the pinned one")
                )
                self.close(CloseCode.UNKNOWN_PEER, "unexpected certificate")
                return
        if self._options.probe_datagram_size:
            self._lib.probe_path_mtu(self._quic, self._options.probe_datagram_size)
        if self._options.keepalive_interval > 0 and not self._keepalive_stopped:
            self._next_ping_at = self._loop.time() + self._options.keepalive_interval
        if not self._handshake_done.done():
            self._handshake_done.set_result(None)
        if not self._is_dialer:
            self._endpoint._handshake_finished(self)

    def _fail_handshake(self, error: DialError) -> None:
        if not self._handshake_done.done():
            self._handshake_done.set_exception(error)
            # a dialer awaits this; an accepted connection's failure has no reader
            self._handshake_done.exception()

    def _notice_close(self, *, in_timer: bool) -> None:
        """Turn the library's close under way into our CloseInfo, once."""
        if self._close_info is not None:
            return
        event = self._lib.close_event(self._quic)
        if event is None:  # terminated without a close reason: treat as a timeout
            info = CloseInfo(CloseCode.TIMEOUT, "connection timed out", by_peer=False)
        elif self._lib.closed_by_peer(self._quic):
            if self._lib.is_transport_close(event):
                # a transport error is not one of our close codes: NO_ERROR stays 0
                code = CloseCode.OK if event.error_code == 0 else CloseCode.PROTOCOL_ERROR
                info = CloseInfo(code, f"transport close 0x{event.error_code:x}: {event.reason_phrase}", by_peer=True)
            else:
                info = CloseInfo(event.error_code, event.reason_phrase, by_peer=True)
        elif not self._lib.is_transport_close(event):
            # an application close the adapter made itself (qh3: receive buffer overflow)
            info = CloseInfo(event.error_code, event.reason_phrase, by_peer=False)
        elif in_timer:
            # aioquic's only timer-driven close is the idle timeout
            info = CloseInfo(CloseCode.TIMEOUT, "idle timeout", by_peer=False)
        else:
            # the library closed on a local error (protocol violation, TLS alert)
            info = CloseInfo(CloseCode.PROTOCOL_ERROR, f"0x{event.error_code:x}: {event.reason_phrase}", by_peer=False)
        if not self._handshake_done.done():
            self._fail_handshake(DialError(f"QUIC handshake with {HostPort(*self._remote)} failed: {info.reason}"))
        self._mark_closed(info)

    def _mark_closed(self, info: CloseInfo) -> None:
        if self._close_info is not None:
            return
        self._close_info = info
        self._forget_once_sent = not self._is_dialer and not self._completed
        self._fail_handshake(DialError(f"QUIC connection to {HostPort(*self._remote)} closed: {info.reason}"))
        self._next_ping_at = None
        self._handshake_deadline = None
        error = ConnectionLost(info.code, info.reason, info.by_peer)
        self._incoming_streams.close(error)
        for stream in self._streams.values():
            stream._wake_reader()
            stream._wake_writer()
        self._closed_event.set()
        self._endpoint._connection_closed(self)

    def _terminate(self) -> None:
        """The library is done with the connection (drain period over): forget it."""
        if self._terminated:
            return
        self._terminated = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        self._endpoint._connection_terminated(self)


class QuicEndpoint:
    """One UDP socket that listens and dials (implements :class:`connet_core.transport.Endpoint`).

    Create with :meth:`QuicEndpoint.open`. ``set_datagram_filter`` is a fault hook for tests.
    """

    def __init__(
        self,
        library: AioquicLibrary,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions,
    ) -> None:
        if alpns and identity is None:
            raise TransportError("an endpoint that accepts connections needs a TLS identity")
        self._lib = library
        self._loop = asyncio.get_running_loop()
        self._options = options
        self._alpns = list(alpns)
        self._server_config = (
            library.configuration(
                is_client=False,
                alpns=self._alpns,
                idle_timeout=options.idle_timeout,
                max_datagram_size=options.max_datagram_size,
                initial_rtt=options.initial_rtt,
                probe_path_mtu=options.probe_datagram_size > 0,
                cert_pem=identity.cert_pem,
                key_pem=identity.key_pem,
            )
            if identity is not None and alpns
            else None
        )
        default_config = library.configuration(
            is_client=True,
            alpns=["x"],
            idle_timeout=options.idle_timeout,
            max_datagram_size=options.max_datagram_size,
            initial_rtt=None,
            probe_path_mtu=options.probe_datagram_size > 0,
        )
        self._supported_versions = library.supported_versions(default_config)
        self._by_cid: dict[bytes, QuicEndpointConnection] = {}
        self._connections: set[QuicEndpointConnection] = set()
        # accepted connections whose handshake is under way, with their share of the caps
        self._pending_accepts: dict[QuicEndpointConnection, Ticket] = {}
        self._admission = Admission()
        self._vn_limiter = TokenBucket(VERSION_NEGOTIATION_RATE, VERSION_NEGOTIATION_BURST)
        self._refusals = Refusals(lambda: self._local)
        self.counters = self._refusals.counters  # what the engines' status exports
        self._failed_since_release = 0  # handshakes (see _memory)
        limit_library_log()
        self._accepted: _Inbox[QuicEndpointConnection] = _Inbox()
        self._udp: BatchedUdpSocket | None = None
        # connections that received datagrams in the current read batch: they answer once
        self._received_in_batch: dict[QuicEndpointConnection, None] = {}
        self._family = socket.AF_INET
        self._dual_stack = False
        self._local = HostPort("", 0)
        self._filter: DatagramFilter | None = None
        self._closed = False
        self._reset_key = ResetKey(options.stateless_reset_key)
        self._reset_limiter = TokenBucket(RESET_RATE, RESET_BURST)
        # connections by the address they talk to: a stateless reset is looked for only
        # among the connections to the address it came from, so an unknown-CID flood costs
        # a dict lookup, not a scan of every connection
        self._by_remote: dict[Address, set[QuicEndpointConnection]] = {}

    @classmethod
    async def open(
        cls,
        library: AioquicLibrary,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions,
    ) -> "QuicEndpoint":
        endpoint = cls(library, identity=identity, alpns=alpns, options=options)
        await endpoint._bind(address)
        return endpoint

    async def _bind(self, address: HostPort) -> None:
        sock = await self._make_socket(address)
        try:
            self._udp = BatchedUdpSocket(
                self._loop, sock, deliver=self._buffer_received, batch_done=self._answer_batch
            )
        except BaseException:
            sock.close()
            raise
        name = sock.getsockname()
        self._local = HostPort(name[0], name[1])

    async def _make_socket(self, address: HostPort) -> socket.socket:
        if address.host == "":
            # every interface: dual stack where IPv6 exists, else IPv4 only
            try:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            except OSError:
                sock = None
            if sock is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    sock.bind(("::", address.port))
                except OSError:
                    sock.close()
                    sock = None
                else:
                    self._family, self._dual_stack = socket.AF_INET6, True
            if sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._bind_or_close(sock, ("0.0.0.0", address.port), address)
                self._family = socket.AF_INET
        else:
            try:
                infos = await self._loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                raise TransportError(f"cannot bind {address}: {exc.strerror}") from None
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            self._family = family
            if family == socket.AF_INET6 and sockaddr[0] == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                self._dual_stack = True
            self._bind_or_close(sock, sockaddr, address)
        size_buffers(sock)  # warns once if the kernel grants less (the sysctls to raise)
        sock.setblocking(False)
        return sock

    @staticmethod
    def _bind_or_close(sock: socket.socket, sockaddr: Any, address: HostPort) -> None:
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP {address}: {exc.strerror or exc}") from None

    # Endpoint API

    @property
    def local_address(self) -> HostPort:
        return self._local

    def set_datagram_filter(self, allow: DatagramFilter | None) -> None:
        """Fault hook for tests: ``allow(peer, outgoing)`` is called for every datagram
        received from (``outgoing`` False) or sent to (``outgoing`` True) ``peer`` (a
        normalized HostPort); returning False drops the datagram silently, as a dead path
        would. ``None`` removes the filter."""
        self._filter = allow

    async def accept(self) -> QuicEndpointConnection:
        return await self._accepted.get()

    async def dial(
        self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None
    ) -> QuicEndpointConnection:
        """Dial from this endpoint's socket.

        Trust: ``pinned_der`` — the pinned certificate is the only trust anchor and, after
        the handshake, must be exactly the one presented (SHA-256 compared);
        ``server_name`` is then checked only when given (the engine passes the common
        name of the peer's identity; without it the exact match is the whole check).
        ``cafile`` — normal verification against that bundle; neither — certifi's bundle;
        for both, ``server_name`` defaults to the dialed host. Raises DialError.
        """
        if self._closed:
            raise DialError("endpoint is closed")
        remote = await self._resolve(address)
        if trust.pinned_der is not None:
            try:
                cadata = x509.load_der_x509_certificate(trust.pinned_der).public_bytes(Encoding.PEM)
            except ValueError:
                raise DialError(f"dial {address}: the pinned certificate is not valid DER") from None
            server_name = trust.server_name
        else:
            cadata = None
            if trust.cafile is not None:
                try:
                    cadata = read_file(trust.cafile, "pem")  # never a FIFO or /dev/zero: files.py
                    x509.load_pem_x509_certificates(cadata)
                except FileRefused as exc:
                    raise DialError(f"dial {address}: CA file {exc}") from None
                except ValueError:
                    raise DialError(f"dial {address}: CA file {trust.cafile} holds no PEM certificate") from None
            server_name = trust.server_name or address.host
        config = self._lib.configuration(
            is_client=True,
            alpns=[alpn],
            idle_timeout=self._options.idle_timeout,
            max_datagram_size=self._options.max_datagram_size,
            initial_rtt=self._options.initial_rtt,
            probe_path_mtu=self._options.probe_datagram_size > 0,
            server_name=server_name,
            cadata=cadata,
            pinned_der=trust.pinned_der,
        )
        quic = self._lib.new_connection(
            config, max_streams=self._options.max_streams, reset_token=self._reset_key.token
        )
        deadline = self._loop.time() + (timeout if timeout is not None else self._options.handshake_timeout)
        connection = QuicEndpointConnection(
            self, quic, is_dialer=True, remote=remote, handshake_deadline=deadline, pinned_der=trust.pinned_der
        )
        self._add_connection(connection)
        # routable before the first datagram leaves: the answer may come back at once
        self._register_cid(connection, self._lib.host_cid(quic))
        quic.connect(remote, now=self._loop.time())
        connection._transmit()
        try:
            await connection._handshake_done
        except asyncio.CancelledError:
            connection.close(CloseCode.SHUTDOWN, "dial cancelled")  # the peer learns at once
            raise
        return connection

    async def close(self, code: int = CloseCode.OK, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._accepted.close(ConnectionLost(code, "endpoint closed", by_peer=False))
        for connection in list(self._connections):
            connection.close(code, reason)  # sends CONNECTION_CLOSE now
            connection._terminate()
        self._by_cid.clear()
        if self._udp is not None:
            await self._udp.close(flush=True)  # the CONNECTION_CLOSEs above must leave

    async def abort(self) -> None:
        """Test hook: vanish as a crashed process would — close the socket without
        sending anything (no CONNECTION_CLOSE), so the peers still believe in their
        connections. Local users see ConnectionLost(SHUTDOWN). Not part of the seam."""
        if self._closed:
            return
        self._closed = True
        self._accepted.close(ConnectionLost(CloseCode.SHUTDOWN, "endpoint aborted", by_peer=False))
        for connection in list(self._connections):
            connection._mark_closed(CloseInfo(CloseCode.SHUTDOWN, "endpoint aborted", by_peer=False))
            connection._terminate()
        self._by_cid.clear()
        if self._udp is not None:
            await self._udp.close(flush=False)  # drops anything still queued: nothing may leave

    # internals

    async def _resolve(self, address: HostPort) -> Address:
        if not address.host:
            raise DialError(f"dial {address}: no host to dial")
        try:
            infos = await self._loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise DialError(f"dial {address}: cannot resolve {address.host!r}: {exc.strerror}") from None
        for family, _, _, _, sockaddr in infos:
            if family == self._family or (family == socket.AF_INET and self._dual_stack):
                return _canonical(sockaddr)
        raise DialError(f"dial {address}: no address of a family this socket can reach ({self._local})")

    def _sendto(self, data: bytes, addr: Address) -> None:
        self._send_run([data], addr)

    def _send_run(self, run: list[bytes], addr: Address) -> None:
        """Datagrams to one address (the test fault filter sees each send)."""
        if self._filter is not None and not self._filter(HostPort(*addr), True):
            return
        self._udp.send(run, self._socket_address(addr))  # type: ignore[union-attr]

    def _send_datagrams(self, connection: QuicEndpointConnection, datagrams: list[tuple[bytes, Any]]) -> None:
        """A connection's datagrams, in runs per address (one address but while it migrates)."""
        start = 0
        while start < len(datagrams):
            addr = datagrams[start][1]
            end = start + 1
            while end < len(datagrams) and datagrams[end][1] == addr:
                end += 1
            run = [data for data, _ in datagrams[start:end]]
            start = end
            connection._bytes_sent += sum(map(len, run))
            self._send_run(run, addr)

    def _socket_address(self, addr: Address) -> Address:
        if self._family == socket.AF_INET6 and ":" not in addr[0]:
            return ("::ffff:" + addr[0], addr[1])
        return addr

    def _answer_batch(self) -> None:
        """After a read batch: every connection that received sends its answer once."""
        batch = self._received_in_batch
        if not batch:
            return
        self._received_in_batch = {}
        pending = self._pending_accepts
        for connection in batch:
            self._contained(connection, "sending", connection._transmit)
            if connection._bytes_sent == 0 and connection in pending and not connection._terminated:
                # A client's first Initial is always answered (an ACK at least). Nothing to
                # send means the library could not decrypt it: garbage shaped like an Initial.
                # Forget it now instead of holding its state until the handshake timeout.
                connection._abort(CloseCode.PROTOCOL_ERROR, "undecryptable Initial")

    @staticmethod
    def _contained(connection: QuicEndpointConnection, doing: str, action: Callable[..., None], *args: Any) -> bool:
        """Run one connection's library work; a failure (a library bug) ends that
        connection only, never the endpoint's others. True if it succeeded."""
        try:
            action(*args)
        except Exception:  # noqa: BLE001 — the one place a connection's failure is contained
            logger.exception("QUIC connection %r failed %s", connection, doing)
            connection._abort(CloseCode.INTERNAL_ERROR, "internal error")
            return False
        return True

    def _buffer_received(self, buffer: bytes, segment: int, raw_addr: Any) -> None:
        """One datagram, or a GRO run of same-sized ones from one address."""
        if segment < len(buffer) and self._filter is None:
            connection = self._run_owner(buffer, segment)
            if connection is not None:
                addr = _canonical(raw_addr)
                if self._contained(connection, "on datagrams", connection._segments_received, buffer, segment, addr):
                    self._received_in_batch[connection] = None
                return
        for data in segments(buffer, segment):
            self._datagram_received(data, raw_addr)

    def _run_owner(self, buffer: bytes, segment: int) -> QuicEndpointConnection | None:
        """The established connection every datagram of a run is for, if there is one:
        all short-header packets with one connection ID. Anything else (handshakes,
        several connections from one peer socket) goes one datagram at a time."""
        end = 1 + CONNECTION_ID_LENGTH
        cid = buffer[1:end]
        for start in range(0, len(buffer), segment):
            if buffer[start] & 0x80 or buffer[start + 1:start + end] != cid:
                return None
        connection = self._by_cid.get(cid)
        if connection is None or not connection._handshake_done.done():
            return None
        return connection

    def _datagram_received(self, data: bytes, raw_addr: Any) -> None:
        addr = _canonical(raw_addr)
        if self._filter is not None and not self._filter(HostPort(*addr), False):
            return
        lib = self._lib
        header = lib.parse_header(data)
        if header is None:
            self._dropped("not_quic", addr)
            return
        if lib.needs_version_negotiation(header, self._supported_versions):
            if self._server_config is not None:
                if self._vn_limiter.take(self._loop.time()):
                    self.counters["quic_version_negotiations_sent"] += 1
                    self._sendto(lib.version_negotiation(header, self._supported_versions), addr)
                else:
                    self._dropped("unroutable", addr, "version negotiation over its rate")
            return
        connection = self._by_cid.get(header.destination_cid)
        if connection is None:
            if self._server_config is not None and not self._closed and lib.is_initial(header):
                if len(data) < lib.smallest_max_datagram_size:
                    self._dropped("small_initial", addr)
                    return
                connection = self._accept_initial(header, addr)
                if connection is None:
                    return
            else:
                self._unroutable(data, header, addr)
                return
        if self._contained(connection, "on a datagram", connection._datagram_received, data, addr):
            self._received_in_batch[connection] = None

    def _unroutable(self, data: bytes, header: Any, addr: Address) -> None:
        """A datagram for no connection of ours: a peer's stateless reset of one of our
        connections, or a packet of a connection we forgot (answered with a reset)."""
        if not self._lib.is_short_header(header):
            self._dropped("unroutable", addr, "long header for no connection")
            return  # a long header is never a reset, and we never answer one
        token = reset_token_of(data)
        if token is None:
            self._dropped("unroutable", addr, "short header too small to answer")
            return
        for connection in list(self._by_remote.get(addr, ())):
            for candidate in self._lib.peer_reset_tokens(connection._quic):
                if hmac.compare_digest(candidate, token):
                    connection._on_stateless_reset()
                    return
        if self._closed or not self._reset_limiter.take(self._loop.time()):
            self._dropped("unroutable", addr, "stateless reset over its rate")
            return
        reset = stateless_reset(self._reset_key.token(header.destination_cid), len(data))
        if reset is not None:
            self.counters["quic_resets_sent"] += 1
            self._sendto(reset, addr)

    def _dropped(self, cause: str, addr: Address, detail: str = "") -> None:
        self._refusals.dropped(cause, addr, self._loop.time(), detail)

    def _accept_initial(self, header: Any, addr: Address) -> QuicEndpointConnection | None:
        """A client Initial for no connection: accept, ask for a Retry or drop (see
        connet_quic.admission)."""
        now = self._loop.time()
        decision = self._admission.initial(addr, header.destination_cid, header.token or b"", now)
        if decision.verdict is Verdict.ACCEPT:
            return self._new_accepted(addr, decision.original_dcid, decision.retry_scid, decision.ticket)
        if decision.verdict is Verdict.RETRY:
            retry_scid = os.urandom(self._lib.connection_id_length)
            token = self._admission.tokens.issue(addr, header.destination_cid, retry_scid, now)
            packet = retry_packet(header.version, header.source_cid, retry_scid, header.destination_cid, token)
            if packet is None:
                self._dropped("unroutable", addr, f"Initial of version 0x{header.version:x}: no Retry for it")
                return None
            self._refusals.retried(decision.cause, addr, now)
            self._sendto(packet, addr)
            return None
        self._dropped(decision.cause, addr)
        return None

    def _new_accepted(
        self, addr: Address, original_dcid: bytes, retry_scid: bytes | None, ticket: Ticket | None
    ) -> QuicEndpointConnection:
        quic = self._lib.new_connection(
            self._server_config,
            max_streams=self._options.max_streams,
            reset_token=self._reset_key.token,
            original_destination_connection_id=original_dcid,
            retry_source_connection_id=retry_scid,
        )
        connection = QuicEndpointConnection(
            self,
            quic,
            is_dialer=False,
            remote=addr,
            handshake_deadline=self._loop.time() + self._options.handshake_timeout,
        )
        self._add_connection(connection)
        assert ticket is not None
        self._pending_accepts[connection] = ticket
        # as aioquic's server: route both the CID the client sends to (its own choice, or
        # the one our Retry gave it) and our own
        self._register_cid(connection, retry_scid if retry_scid is not None else original_dcid)
        self._register_cid(connection, self._lib.host_cid(quic))
        return connection

    def _add_connection(self, connection: QuicEndpointConnection) -> None:
        self._connections.add(connection)
        self._by_remote.setdefault(connection._remote, set()).add(connection)

    def _register_cid(self, connection: QuicEndpointConnection, cid: bytes) -> None:
        self._by_cid[cid] = connection
        connection._cids.add(cid)

    def _unregister_cid(self, connection: QuicEndpointConnection, cid: bytes) -> None:
        if self._by_cid.get(cid) is connection:
            del self._by_cid[cid]
        connection._cids.discard(cid)

    def _no_longer_pending(self, connection: QuicEndpointConnection) -> None:
        ticket = self._pending_accepts.pop(connection, None)
        if ticket is not None:
            self._admission.finished(ticket)

    def _handshake_finished(self, connection: QuicEndpointConnection) -> None:
        self._no_longer_pending(connection)
        if connection._alpn not in self._alpns:
            connection.close(CloseCode.PROTOCOL_ERROR, "unsupported ALPN")
            return
        self._accepted.put(connection)

    def _connection_closed(self, connection: QuicEndpointConnection) -> None:
        if connection in self._pending_accepts:
            self.counters["quic_handshakes_failed"] += 1
            self._failed_since_release += 1
        self._no_longer_pending(connection)
        if not self._pending_accepts and self._failed_since_release >= _memory.AFTER_FAILED_HANDSHAKES:
            # a flood of failed handshakes is over (for now): give their memory back, outside
            # of this connection's close
            self._failed_since_release = 0
            _memory.release_freed_memory_soon(self._loop)

    def _connection_terminated(self, connection: QuicEndpointConnection) -> None:
        for cid in connection._cids:
            if self._by_cid.get(cid) is connection:
                del self._by_cid[cid]
        connection._cids.clear()
        self._connections.discard(connection)
        self._no_longer_pending(connection)
        peers = self._by_remote.get(connection._remote)
        if peers is not None:
            peers.discard(connection)
            if not peers:
                del self._by_remote[connection._remote]

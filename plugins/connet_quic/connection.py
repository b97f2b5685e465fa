"""One QUIC connection of either role: our glue on the library's connection.

The connection drives its library connection (:class:`connet_quic.library.QuicLibraryConnection`)
with what happens to it — datagrams, its timer, the application's stream calls — turns the
library's events into streams, routes and close information, and hands every datagram the
library wants sent to the endpoint. It does not know the endpoint: what it may do outside
itself (send datagrams, route its connection IDs, report its handshake and its end) is
passed in (:class:`connet_quic.wiring.ConnectionWiring`), as hypercorn's
``QuicProtocol(send, call_at, now)`` gets its capabilities.

Each connection has one timer, which drives the library's timer (pacing included), the keepalive
and the handshake deadline (:mod:`connet_quic.clock`). Received datagrams are answered once
per read batch: the endpoint calls :meth:`QuicEndpointConnection.transmit` after the batch,
so one ACK covers many datagrams.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Callable

from connet_core.errors import ConnectionLost, DialError
from connet_core.model import HostPort, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo, ConnectionStats

from connet_quic.addresses import Address
from connet_quic.clock import ConnectionClock
from connet_quic.closing import close_info_of
from connet_quic.datagrams import QuicDatagrams
from connet_quic.inbox import Inbox
from connet_quic.library import QuicLibrary, QuicLibraryConnection
from connet_quic.stream import QuicEndpointStream
from connet_quic.wiring import ConnectionWiring

logger = logging.getLogger("connet.quic")


class QuicEndpointConnection(ConnectionClock):
    """One QUIC connection of either role (implements :class:`connet_core.transport.Connection`)."""

    def __init__(
        self,
        wiring: ConnectionWiring,
        quic: QuicLibraryConnection,
        *,
        is_dialer: bool,
        remote: Address,
        handshake_deadline: float,
        pinned_der: bytes | None = None,
    ) -> None:
        self._lib: QuicLibrary[QuicLibraryConnection] = wiring.library
        self._quic = quic
        self._loop = wiring.loop
        self._options = wiring.options
        self.stream_send_buffer = wiring.options.stream_send_buffer  # a stream's unsent bytes, at most
        self._send_datagrams = wiring.send
        self._wiring = wiring
        self._is_dialer = is_dialer
        self._remote = remote
        # over a TCP pipe: the TCP peer is the address the engines see (CIDR rules, status)
        self._pipe_peer = wiring.pipe_peer(remote)
        self._pinned_hash = certificate_hash(pinned_der) if pinned_der is not None else None
        self._alpn = ""
        self._peer_certificate: bytes | None = None
        self._cids: set[bytes] = set()
        self._streams: dict[int, QuicEndpointStream] = {}
        # peer-initiated bidirectional streams: client-initiated ids are 0 mod 4
        self._next_peer_stream_id = 1 if is_dialer else 0
        self._incoming_streams: Inbox[QuicEndpointStream] = Inbox()
        self._blocked_writers: set[QuicEndpointStream] = set()
        self._handshake_deadline: float | None = handshake_deadline
        self._handshake_done: asyncio.Future[None] = self._loop.create_future()
        # whether the handshake completed or failed (established, if not closed): the future's
        # own method, so that the endpoint's check per GRO run costs no Python call
        self.handshake_settled: Callable[[], bool] = self._handshake_done.done
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
        # its CONNECTION_CLOSE left, not after the closing period (3 PTO): see transmit
        self._forget_once_sent = False
        self.datagrams = QuicDatagrams(self, self._lib, quic, self._transmit_soon)  # RFC 9221, see datagrams.py

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
        return self._pipe_peer or HostPort(*self._remote)

    @property
    def carrier(self) -> str:  # "udp", or "tcp": a pipe (connet_quic.tcp_pipe)
        return "tcp" if self._pipe_peer is not None else "udp"

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
        self.raise_if_closed()
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
        self.transmit()

    async def wait_closed(self) -> CloseInfo:
        await self._closed_event.wait()
        assert self._close_info is not None
        return self._close_info

    # for the endpoint

    @property
    def address(self) -> Address:
        """The peer's address in canonical form (the endpoint's key for it)."""
        return self._remote

    @property
    def connection_ids(self) -> set[bytes]:
        """Our connection IDs the endpoint routes to this connection."""
        return self._cids

    def add_connection_id(self, cid: bytes) -> None:
        """Route datagrams for ``cid`` to this connection."""
        self._cids.add(cid)
        self._wiring.route(cid, self)

    async def wait_handshake(self) -> None:
        """Until the handshake completed; raises its DialError if it failed."""
        await self._handshake_done

    @property
    def sent_nothing(self) -> bool:
        """Not a datagram sent yet, and still alive."""
        return self._bytes_sent == 0 and not self._terminated

    def reset_by(self, token: bytes) -> bool:
        """Whether ``token`` is the stateless reset token of a peer CID we send to."""
        for candidate in self._lib.peer_reset_tokens(self._quic):
            if hmac.compare_digest(candidate, token):
                return True
        return False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # the answer leaves when the endpoint finished the read batch (one ACK for many)
        self._bytes_received += len(data)
        self._quic.receive_datagram(data, addr, self._library_time())
        self._process_events(in_timer=False)

    def segments_received(self, buffer: bytes, segment: int, addr: Address) -> None:
        """A GRO run of this connection's datagrams (see QuicEndpoint._run_owner)."""
        self._bytes_received += len(buffer)
        self._lib.receive_segments(self._quic, buffer, segment, addr, self._library_time())
        self._process_events(in_timer=False)

    def transmit(self, now: float | None = None) -> None:
        """Send everything the library has to send now, then re-arm the timer."""
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
            self._bytes_sent += self._send_datagrams(datagrams)
        if self._forget_once_sent:
            # A failed handshake of a client nobody knows (wrong ALPN, a flood): its
            # CONNECTION_CLOSE just left; lingering in the closing period to repeat it would
            # hold ~90 KiB per handshake for seconds. If the close is lost, the client's
            # handshake times out.
            self.terminate()
            return
        if self._blocked_writers:
            bound = self.stream_send_buffer
            for stream in list(self._blocked_writers):
                if self.unsent(stream.stream_id) <= bound:
                    stream.wake_writer()
        self._arm_timer()

    def stateless_reset_received(self) -> None:
        """The peer sent a stateless reset: it no longer knows this connection (it
        restarted). RFC 9000 10.3.1: stop at once, send nothing more."""
        logger.info("QUIC connection %r: stateless reset received (the peer restarted)", self)
        self._fail_handshake(DialError(f"QUIC handshake with {HostPort(*self._remote)} failed: peer reset"))
        self._mark_closed(CloseInfo(CloseCode.PEER_RESET, "stateless reset: the peer restarted", by_peer=True))
        self.terminate()

    def fail(self, code: int, reason: str) -> None:
        """Close at once, for failures of our own: no drain period to wait out."""
        self._fail_handshake(DialError(f"QUIC connection to {HostPort(*self._remote)} failed: {reason}"))
        self._mark_closed(CloseInfo(code, reason, by_peer=False))
        self.terminate()

    def vanish(self, info: CloseInfo) -> None:
        """End without sending anything (the endpoint's crash hook): local users see ``info``."""
        self._mark_closed(info)
        self.terminate()

    def terminate(self) -> None:
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
        self._wiring.terminated(self)
        self._cids.clear()

    # for its streams

    def raise_if_closed(self) -> None:
        info = self._close_info
        if info is not None:
            raise ConnectionLost(info.code, info.reason, info.by_peer)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream)
        self._transmit_soon()

    def unsent(self, stream_id: int) -> int:
        return self._lib.unsent(self._quic, stream_id)

    @property
    def blocked_writers(self) -> set[QuicEndpointStream]:
        """The streams whose drain() waits for room: a stream adds itself while it waits,
        and each send round wakes those back under ``stream_send_buffer``. A stream keeps
        the set itself: a drain costs no call more than the set's own."""
        return self._blocked_writers

    def consumed(self, stream: QuicEndpointStream, n: int) -> None:
        """The application read ``n`` bytes of ``stream``: they no longer hold receive credit."""
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

    def discard_unread(self, stream: QuicEndpointStream) -> None:
        n = stream.clear_unread()
        quic = self._quic
        quic.unread_by_stream.pop(stream.stream_id, None)
        quic.unread_total -= n
        self.forget_if_done(stream)

    def reset_stream(self, stream: QuicEndpointStream, code: int, *, reset_sending: bool, stop_receiving: bool) -> None:
        """The application reset ``stream``: abort the directions still open."""
        self.discard_unread(stream)
        if self._close_info is not None:
            return
        stream_id = stream.stream_id
        quic = self._quic
        try:
            if reset_sending:
                quic.reset_stream(stream_id, code)
            if stop_receiving:
                quic.stop_stream(stream_id, code)
        except ValueError:
            # the library already discarded the stream: nothing left to abort
            logger.debug("reset of finished stream %d ignored", stream_id)
        self.forget_if_done(stream)
        self._transmit_soon()

    def forget_if_done(self, stream: QuicEndpointStream) -> None:
        if stream.finished:
            self._streams.pop(stream.stream_id, None)

    # events

    def _process_events(self, *, in_timer: bool) -> None:
        quic = self._quic
        ev = self._lib.events
        while (event := quic.next_event()) is not None:
            kind = type(event)
            if kind is ev.StreamDataReceived:
                self._on_stream_data(event.stream_id, event.data, event.end_stream)
            elif kind is ev.ConnectionIdIssued:
                self.add_connection_id(event.connection_id)
            elif kind is ev.ConnectionIdRetired:
                self._cids.discard(event.connection_id)
                self._wiring.unroute(event.connection_id, self)
            elif kind is ev.DatagramFrameReceived:
                self.datagrams.received(event.data)
            elif kind is ev.StreamReset:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_reset(event.error_code)
            elif kind is ev.StopSendingReceived:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_stopped_sending(event.error_code)
                    self.forget_if_done(stream)
            elif kind is ev.HandshakeCompleted:
                self._on_handshake_completed(event.alpn_protocol or "")
            elif kind is ev.ConnectionTerminated:
                self._notice_close(in_timer=in_timer)
                self.terminate()
                return
        if self._close_info is None and self._lib.close_event(quic) is not None:
            self._notice_close(in_timer=in_timer)

    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None and stream_id % 4 == self._next_peer_stream_id % 4 and stream_id >= self._next_peer_stream_id:
            # a new peer stream opens every lower-numbered one too (RFC 9000 2.1)
            for new_id in range(self._next_peer_stream_id, stream_id + 4, 4):
                new_stream = self._streams[new_id] = QuicEndpointStream(self, new_id)
                self._incoming_streams.put(new_stream)
            self._next_peer_stream_id = stream_id + 4
            stream = self._streams[stream_id]
        if stream is None:
            return
        if not stream.feed(data, end_stream):
            # nobody will read it: credited back at once (it only counted as received)
            if end_stream:
                self.forget_if_done(stream)
            return
        if data:
            quic = self._quic
            quic.unread_by_stream[stream_id] = quic.unread_by_stream.get(stream_id, 0) + len(data)
            quic.unread_total += len(data)

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
            self._wiring.accepted(self)

    def _fail_handshake(self, error: DialError) -> None:
        if not self._handshake_done.done():
            self._handshake_done.set_exception(error)
            # a dialer awaits this; an accepted connection's failure has no reader
            self._handshake_done.exception()

    def _notice_close(self, *, in_timer: bool) -> None:
        """Turn the library's close under way into our CloseInfo, once."""
        if self._close_info is not None:
            return
        info = close_info_of(self._lib, self._quic, in_timer=in_timer)
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
            stream.wake_reader()
            stream.wake_writer()
        self._closed_event.set()
        self._wiring.closed(self)

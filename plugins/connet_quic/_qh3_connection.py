"""qh3's connection as our adapter (:mod:`connet_quic._qh3`) drives it: the stream limit in
its transport parameters, the derived stateless reset token, close bookkeeping, the
anti-amplification and late-FIN workarounds it inherits, and our receive-side backpressure:

- **Receive-side backpressure, per connection only.** The native core extends
  MAX_STREAM_DATA / MAX_DATA as packets *arrive* (holding its events back does not hold
  credit back: measured), and has no call to report consumption, so credit cannot follow
  what the application read. A reader slower than the path (a relay's next hop, a slow
  local program) would make unread data grow without bound. So the endpoint glue counts
  unread bytes (``unread_total``) as for aioquic, and while a connection holds more than
  ``unread_pause`` (default 8 MiB) its incoming datagrams are *held*, in arrival order, up
  to ``held_limit`` bytes (8 MiB; more are dropped, like a full router queue), and handed
  to the core once the reader has caught up (a read makes that due: ``stream_credit_due``,
  then ``release_held`` before the next send). To the peer this looks like a path whose
  acknowledgements stopped: its congestion window fills and it waits. Datagrams of at most
  ``ACK_SIZED`` bytes are never held: they are the peer's acknowledgements, without which
  the paused connection could not send either (a program that answers what it reads would
  deadlock: it stops reading while its answer cannot leave, and the answer waits on
  acknowledgements held behind the unread data;
  ``test_qh3_a_held_connection_still_hears_acknowledgements``). While paused, the oldest
  held datagram still goes in every ``admit_interval`` (0.5 s; the endpoint's timer wakes
  for it, see ``next_admission``), so that neither end's idle timeout fires; that trickle
  adds unread data, and a connection nobody reads for so long that it holds ``2 *
  unread_pause + held_limit`` (about 45 minutes) is closed with INTERNAL_ERROR ("receive
  buffer overflow"). The pause holds *every* stream of that
  connection, so one stream nobody reads stalls the others between the same two peers
  (aioquic holds back only that stream's credit: choose it where that matters; it is the
  default). Dropping the datagrams instead of holding them was tried: qh3 2.1.0 then
  stalled a stream several times more often (docs/performance.md, Known problems). The
  send side is unaffected: ``Stream.write`` still waits on ``get_send_buffer_size``.
"""

from __future__ import annotations

import collections
import functools
import logging
from typing import Any, Callable

from qh3._hazmat import Buffer, QuicConnectionCore
from qh3.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from qh3.quic.tls_bridge import QuicTlsBridge

from connet_core.protocol.codes import CloseCode

from connet_quic._qh3_amplification import AmplificationBudget, core_receive
from connet_quic._qh3_core import CoreProxy
from connet_quic._qh3_fin import FinGate
from connet_quic._qh3_trust import accept_exact_anchors

logger = logging.getLogger("connet.quic")

# Datagrams this small are never held: acknowledgements (an ACK-only packet is 40-100
# bytes), so that a paused connection's own sending goes on (see "Receive-side backpressure")
ACK_SIZED = 256


class _Qh3TlsBridge(QuicTlsBridge):
    """qh3's TLS bridge with our stream limit in the transport parameters."""

    def __init__(self, *args: Any, max_streams: int, **kwargs: Any) -> None:
        # set first: the parent serializes the transport parameters in its __init__
        self._connet_max_streams = max_streams
        super().__init__(*args, **kwargs)
        # a server certificate that is one of the configured CAs (openssl's self-signed
        # CA:TRUE ones): accepted as aioquic does, which webpki would refuse (_qh3_trust)
        accept_exact_anchors(self.tls, self.configuration.cadata, is_client=self.configuration.is_client)

    def serialize_transport_parameters(self) -> bytes:
        parameters = pull_quic_transport_parameters(Buffer(data=super().serialize_transport_parameters()))
        parameters.initial_max_streams_bidi = self._connet_max_streams
        parameters.initial_max_streams_uni = 0  # we use none
        buf = Buffer(capacity=3 * self.configuration.max_datagram_size)
        push_quic_transport_parameters(buf, parameters)
        return buf.data


class Qh3Connection(AmplificationBudget):
    """qh3's connection with our stream limit, derived reset token and close bookkeeping, a
    server's handshake under the anti-amplification limit fixed (_qh3_amplification) and a
    late FIN held until its stream's data is acknowledged (_qh3_fin)."""

    def __init__(
        self,
        *,
        max_streams: int,
        reset_token: Callable[[bytes], bytes],
        unread_pause: int,
        held_limit: int,
        admit_interval: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._connet_max_streams = max_streams
        self._reset_token = reset_token
        self.unread_pause = unread_pause
        self.held_limit = held_limit
        self.admit_interval = admit_interval
        # datagrams held back while paused, in arrival order: (buffer, segment size, address)
        self._held: collections.deque[tuple[bytes, int, Any]] = collections.deque()
        self._held_bytes = 0
        self.dropped = 0  # datagrams dropped while held (queue full), logged at the release
        self._next_admit = 0.0
        self.closed_by_peer = False
        self._fin_gate = FinGate()  # FINs held until the stream's data is acknowledged (_qh3_fin)
        # maintained by the endpoint glue exactly as for aioquic (see _aioquic.py)
        self.unread_by_stream: dict[int, int] = {}
        self.unread_total = 0

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        # qh3's own loop parses every sent packet's header for its qlog even when there is
        # no logger (about a tenth of a busy sender's CPU); we never configure one
        if self._quic_logger is not None or self._core is None:
            return super().datagrams_to_send(now)
        poll = self._core.poll_transmit
        datagrams = []
        while (transmit := self.poll_transmit_or_wait(poll, now)) is not None:
            datagrams.append((transmit[0], transmit[1]))
        # a closing connection sends no more stream frames: held FINs go with it (writing one
        # now raises "connection is closed" out of the endpoint's close)
        if self._fin_gate.waiting and self._close_event is None:
            for stream_id in self._fin_gate.due(self._core, self.send_ping):
                self._write_to_core(stream_id, b"", True)
            while (transmit := self._call_core(poll, now)) is not None:
                datagrams.append((transmit[0], transmit[1]))
        return datagrams

    def send_stream_data(self, stream_id: int, data: Any, end_stream: bool = False) -> None:
        if self._handshake_complete and isinstance(self._core, CoreProxy) and self._fin_gate.hold(
            self._core, stream_id, data, end_stream
        ):
            return  # a FIN alone after the data: it goes once that data is acknowledged
        self._write_to_core(stream_id, data, end_stream)

    def _write_to_core(self, stream_id: int, data: Any, end_stream: bool) -> None:
        super().send_stream_data(stream_id, data, end_stream)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._fin_gate.forget(stream_id)
        super().reset_stream(stream_id, error_code)

    def _peer_closed(self) -> None:
        self.closed_by_peer = True

    def stream_credit_due(self, stream_id: int) -> bool:
        """qh3 grants credit as packets arrive, not on reading; what a read can make due is
        the release of datagrams held while the connection was paused."""
        return bool(self._held) and self.unread_total <= self.unread_pause

    # Held datagrams go to the core in release_held, which the endpoint calls before every
    # send: after each read batch, after a read that made a release due, and when the
    # connection's timer fires for the trickle (next_admission).

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        if (self._held or self.unread_total > self.unread_pause) and len(data) > ACK_SIZED:
            self._hold(data, len(data), addr)
        else:  # not paused, or acknowledgements, which pass a hold
            self.receive_counting_padding(data, addr, now)

    def receive_gro_buffer(self, buffer: bytes, segment_size: int, addr: Any, now: float) -> None:
        if (self._held or self.unread_total > self.unread_pause) and segment_size > ACK_SIZED:
            self._hold(buffer, segment_size, addr)
        else:
            super().receive_gro_buffer(buffer, segment_size, addr, now)

    def _hold(self, buffer: bytes, segment_size: int, addr: Any) -> None:
        """Paused (too much unread) or not yet released: queue behind what is held, in
        arrival order; beyond ``held_limit`` bytes drop, as a full router queue would."""
        if not self._held:
            logger.debug("qh3 connection holds %d unread bytes: holding its datagrams until they are read",
                         self.unread_total)
        if self._held_bytes + len(buffer) > self.held_limit:
            self.dropped += -(-len(buffer) // segment_size)
        else:
            self._held.append((buffer, segment_size, addr))
            self._held_bytes += len(buffer)

    def next_admission(self) -> float | None:
        """When the trickle lets the next held datagram in (the endpoint arms its timer for
        it, so the trickle does not depend on more datagrams arriving); None if nothing is
        held or the connection is closing."""
        if not self._held or self._close_event is not None:
            return None
        return self._next_admit

    def release_held(self, now: float) -> bool:
        """Hand held datagrams to the core: all of them once unread data is back under the
        bound; while paused, the oldest one datagram per ``admit_interval``, so that both
        ends keep hearing each other (no idle timeout). That trickle adds unread data: a
        connection nobody reads for so long that it holds ``unread_pause`` more than a full
        release can bring is closed. True if the caller should take the events (datagrams
        went in, or the connection was closed)."""
        held = self._held
        if not held:
            return False
        if self.unread_total <= self.unread_pause:
            logger.debug("qh3 connection releases %d held datagram runs (%d datagrams dropped while held)",
                         len(held), self.dropped)
            self.dropped = 0
            while held:
                buffer, segment_size, addr = held.popleft()
                if segment_size < len(buffer):
                    super().receive_gro_buffer(buffer, segment_size, addr, now)
                else:
                    super().receive_datagram(buffer, addr, now)
            self._held_bytes = 0
            return True
        if now < self._next_admit or self._close_event is not None:
            return False
        if self.unread_total > 2 * self.unread_pause + self.held_limit:
            self.close(error_code=CloseCode.INTERNAL_ERROR, reason_phrase="receive buffer overflow")
            return True
        self._next_admit = now + self.admit_interval
        buffer, segment_size, addr = held[0]
        if len(buffer) > segment_size:
            held[0] = (buffer[segment_size:], segment_size, addr)
            buffer = buffer[:segment_size]
        else:
            held.popleft()
        self._held_bytes -= len(buffer)
        super().receive_datagram(buffer, addr, now)
        return True

    def _create_core(self, remote_addr: Any, initial_dcid: bytes, now: float) -> None:
        # qh3's _create_core with two changes: the peer-stream limits (100 / 103 there) and
        # the proxy. No session tickets / 0-RTT here, so nothing is remembered.
        configuration = self._configuration
        core = QuicConnectionCore(
            self._is_client,
            self._version,
            ("0.0.0.0", 0),
            remote_addr,
            self.host_cid,
            initial_dcid,
            self._is_client or self._retry_source_connection_id is not None,
            configuration.active_connection_id_limit or (2 if self._is_client else 8),
            configuration.max_datagram_size,
            configuration.probe_datagram_size,
            configuration.idle_timeout,
            3,  # ack_delay_exponent
            configuration.max_datagram_frame_size
            if configuration.max_datagram_frame_size is not None
            else (65536 if self._is_client else None),
            None,  # peer_max_datagram_frame_size (from a session ticket)
            configuration.max_data,
            0,  # connection_send_limit (from a session ticket)
            configuration.max_stream_data,
            0,
            0,
            0,  # stream send limits (from a session ticket)
            configuration.max_stream_data,  # max_stream_reassembly, as qh3
            self._connet_max_streams,  # local_max_streams_bidi
            0,  # local_max_streams_uni: we use none
            0,
            0,  # peer stream limits (from a session ticket)
            configuration.initial_rtt,
            0.025,  # max_ack_delay
            now,
        )
        # a padded datagram's padding counts toward the anti-amplification budget (_qh3_amplification)
        receive = functools.partial(core_receive, core, self)
        self._core = CoreProxy(core, self._peer_closed, receive)  # type: ignore[assignment]
        self._applied_transport_parameters = None
        self._pre_handshake_state_replayed = False

    def _create_tls(self, remote_source_cid: bytes | None) -> QuicTlsBridge:
        tls_bridge = _Qh3TlsBridge(
            self._configuration,
            max_streams=self._connet_max_streams,
            version=self._version,
            local_initial_source_connection_id=self.host_cid,
            remote_initial_source_connection_id=remote_source_cid,
            original_destination_connection_id=self._original_destination_connection_id,
            retry_source_connection_id=self._retry_source_connection_id,
            # the server's first CID: derived, so a restarted endpoint can reset it
            stateless_reset_token=None if self._is_client else self._reset_token(self.host_cid),
            session_ticket_fetcher=self._session_ticket_fetcher,
            session_ticket_handler=self._session_ticket_handler,
            quic_logger=self._quic_logger,
            version_change_handler=self._set_version,
        )
        self._tls = tls_bridge
        return tls_bridge

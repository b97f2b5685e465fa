"""Everything that knows aioquic's internals, behind one small adapter.

The endpoint (:mod:`connet_quic.endpoint`) talks to a QUIC library only through
:class:`AioquicLibrary`; a library mirroring aioquic's sans-I/O API can reuse the endpoint
by providing an adapter with the same methods.

What we change in aioquic, and why (docs/architecture.md lists the transport's modules):

- **Receive windows follow what the application consumed.** aioquic doubles
  MAX_STREAM_DATA / MAX_DATA whenever half of the window has *arrived*, so a peer can push
  without bound into an application that does not read. :class:`FlowControlledConnection`
  replaces the two methods that compute those limits: a stream's limit is
  ``bytes the application consumed + stream_window`` and the connection's is
  ``bytes received - bytes still unread in stream buffers + connection_window``. The glue
  keeps ``unread_by_stream`` / ``unread_total`` up to date, so a stream whose reader stops
  holds at most ``stream_window`` unread bytes, and a connection at most
  ``connection_window``: the sender then stalls on flow control, its unsent bytes grow,
  and its ``Stream.write`` blocks — backpressure end to end. Updates are sent once half a
  window has been consumed (fewer MAX_* frames, and the sender never sees less than half a
  window of credit while the reader keeps up).
- **MAX_STREAMS** is 128 in aioquic; :meth:`AioquicLibrary.new_connection` raises it to
  ``max_streams``. aioquic itself increments the limit when a peer stream is discarded and
  batches MAX_STREAMS frames, so the peer can always have ``max_streams`` open at once.
- **Stateless reset tokens are derived, not random** (see :mod:`connet_quic._reset`): every
  connection ID we issue (the server's first one, advertised in the ``stateless_reset_token``
  transport parameter, and every one sent in NEW_CONNECTION_ID) carries
  ``HMAC(key, cid)[:16]``, so a restarted endpoint with the same key can reset it.
  :meth:`AioquicLibrary.peer_reset_tokens` reads the tokens the *peer* gave us for the
  connection IDs we currently send to, because aioquic itself never looks for a reset.
- **Pings are padded** by ``PING_PADDING`` bytes: we only answer datagrams of
  41 bytes or more with a reset (so the reset can be shorter), and aioquic's bare PING
  packet is ~30 bytes — a restarted peer would never answer our keepalive.
- **Path MTU probing** (aioquic has none; RFC 8899 reduced to one probe): once the
  handshake is done, :meth:`FlowControlledConnection.probe_path_mtu` sends one PING padded
  to the probe size. If the peer acknowledges it, the path carries datagrams that large and
  every later packet may be; if it is lost, the connection stays at 1200 bytes. Nothing is
  assumed about the path (loopback's 64 KiB MTU says nothing about a real one). The probe
  must not be confused with a keepalive: it has its own PING id, is never retransmitted
  (aioquic re-queues lost PINGs, which would then be acknowledged in a small packet), and
  is only written into a packet that it fills to exactly the probe size.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionState,
)
from aioquic.quic.packet_builder import PACKET_NUMBER_SEND_SIZE, QuicPacketBuilder, QuicPacketBuilderStop
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.tls import load_pem_private_key, load_pem_x509_certificates
from cryptography.hazmat.primitives.serialization import Encoding

from connet_quic._adapter import (
    CONNECTION_ID_LENGTH,
    DATAGRAM_FRAME_LIMIT,
    SharedLibraryAdapter,
    datagram_payload_limit,
)
from connet_quic._udp import segments

logger = logging.getLogger("connet.quic")

# PADDING added after every PING frame, so a keepalive datagram is >= 41 bytes and a
# restarted peer answers it with a stateless reset (a bare ping packet is 29-33 bytes).
PING_PADDING = 24
# the PING id of the path MTU probe (keepalive ids count up from 1)
MTU_PROBE_UID = -1


class FlowControlledConnection(QuicConnection):
    """aioquic's connection with receive credit tied to what the application consumed."""

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        reset_token: Callable[[bytes], bytes],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._reset_token = reset_token
        # aioquic drew the first CID's token at random (server role only: a client's first
        # CID has none, RFC 9000 18.2); it goes out in the transport parameters, which are
        # written later (client: connect(); server: the first Initial)
        self._derive_reset_tokens()
        self.stream_window = stream_window
        self.connection_window = connection_window
        # maintained by the endpoint glue: bytes delivered to a Stream but not read yet
        self.unread_by_stream: dict[int, int] = {}
        self.unread_total = 0
        # path MTU probe: None (not asked), "due", "sent", "confirmed" or "failed"
        self.mtu_probe: str | None = None
        self._mtu_probe_size = 0
        self._building_mtu_probe = False

    def probe_path_mtu(self, size: int) -> None:
        """Send one probe of ``size`` bytes; if it is acknowledged, use that size from then on."""
        if self.mtu_probe is None and size > self._max_datagram_size:
            self._mtu_probe_size = size
            self.mtu_probe = "due"

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        datagrams = super().datagrams_to_send(now)
        if self.mtu_probe == "due" and self._state == QuicConnectionState.CONNECTED and self._handshake_confirmed:
            # after the regular packets, so this call builds the probe (and what just
            # became sendable) at the probe size
            normal = self._max_datagram_size
            self._max_datagram_size = self._mtu_probe_size
            self._building_mtu_probe = True
            self._ping_pending.append(MTU_PROBE_UID)
            try:
                datagrams += super().datagrams_to_send(now)
            finally:
                self._max_datagram_size = normal
                self._building_mtu_probe = False
                if MTU_PROBE_UID in self._ping_pending:  # congestion or pacing held it back
                    self._ping_pending.remove(MTU_PROBE_UID)
        return datagrams

    def _on_ping_delivery(self, delivery: Any, uids: Any) -> None:
        if MTU_PROBE_UID in uids:
            uids = tuple(uid for uid in uids if uid != MTU_PROBE_UID)
            if delivery == QuicDeliveryState.ACKED:
                self._max_datagram_size = self._mtu_probe_size
                self.mtu_probe = "confirmed"
            else:
                self.mtu_probe = "failed"  # never again at this size: the path drops it
            path = self._network_paths[0].addr if self._network_paths else "?"
            logger.debug("path MTU probe of %d bytes to %s: %s", self._mtu_probe_size, path, self.mtu_probe)
        super()._on_ping_delivery(delivery, uids)

    def _derive_reset_tokens(self) -> None:
        for cid in self._host_cids:
            if cid.stateless_reset_token is not None:
                cid.stateless_reset_token = self._reset_token(cid.cid)

    def _replenish_connection_ids(self) -> None:
        # new CIDs get random tokens in aioquic; fix them before NEW_CONNECTION_ID is written
        super()._replenish_connection_ids()
        self._derive_reset_tokens()

    def _write_ping_frame(
        self, builder: QuicPacketBuilder, uids: list[int] = [], comment: str = ""  # noqa: B006 — aioquic's signature
    ) -> None:
        if MTU_PROBE_UID in uids:
            if self._write_mtu_probe(builder, uids, comment):
                return
            uids = [uid for uid in uids if uid != MTU_PROBE_UID]  # stays "due": next time
            if not uids:
                return
        super()._write_ping_frame(builder, uids, comment)
        try:
            buf = builder.start_frame(QuicFrameType.PADDING, capacity=PING_PADDING)
        except QuicPacketBuilderStop:
            return  # a full packet is long enough already
        buf.push_bytes(bytes(PING_PADDING - 1))  # PADDING frames are single zero bytes

    def _write_mtu_probe(self, builder: QuicPacketBuilder, uids: list[int], comment: str) -> bool:
        """The PING and PADDING up to exactly the probe size, or nothing (False) when this
        packet cannot be that large (not the probe's packet, or the congestion window)."""
        if not self._building_mtu_probe or builder.remaining_flight_space < builder.remaining_buffer_space:
            return False
        if builder.remaining_buffer_space < PING_PADDING + 1:
            return False
        super()._write_ping_frame(builder, uids, comment)
        fill = builder.remaining_buffer_space
        buf = builder.start_frame(QuicFrameType.PADDING, capacity=fill)
        buf.push_bytes(bytes(fill - 1))  # PADDING frames are single zero bytes
        self.mtu_probe = "sent"
        return True

    def stream_credit_due(self, stream_id: int) -> bool:
        """Whether reading made a MAX_STREAM_DATA (or MAX_DATA) update worth sending now."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            target = stream.receiver._buffer_start - self.unread_by_stream.get(stream_id, 0) + self.stream_window
            if target - stream.max_stream_data_local >= self.stream_window // 2:
                return True
        max_data = self._local_max_data
        return max_data.used - self.unread_total + self.connection_window - max_data.value >= self.connection_window // 2

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        local = stream.max_stream_data_local
        if not local:  # a locally opened unidirectional stream: nothing to receive
            return
        if not stream.receiver.is_finished:
            target = stream.receiver._buffer_start - self.unread_by_stream.get(stream.stream_id, 0) + self.stream_window
            if target - local >= self.stream_window // 2:
                stream.max_stream_data_local = local = target
        if stream.max_stream_data_local_sent != local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(local)
            stream.max_stream_data_local_sent = local

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        max_data = self._local_max_data
        target = max_data.used - self.unread_total + self.connection_window
        if target - max_data.value >= self.connection_window // 2:
            max_data.value = target
        for limit in (self._local_max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            # as aioquic: batch MAX_STREAMS until the peer has fewer streams left to open
            # than the update would grant
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value


class AioquicLibrary(SharedLibraryAdapter):
    """The adapter the endpoint uses; see the module docstring."""

    name = "aioquic"
    events = events
    smallest_max_datagram_size = SMALLEST_MAX_DATAGRAM_SIZE
    connection_id_length = CONNECTION_ID_LENGTH
    _buffer = Buffer
    _pull_quic_header = staticmethod(pull_quic_header)
    _encode_version_negotiation = staticmethod(encode_quic_version_negotiation)
    _packet_type = QuicPacketType

    def __init__(self, *, stream_window: int = 4 * 1024 * 1024, connection_window: int = 16 * 1024 * 1024) -> None:
        self.stream_window = stream_window
        self.connection_window = connection_window

    # configuration

    def configuration(
        self,
        *,
        is_client: bool,
        alpns: list[str],
        idle_timeout: float,
        max_datagram_size: int,
        initial_rtt: float | None,
        probe_path_mtu: bool = True,  # aioquic does not probe: the connection does (probe_path_mtu)
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        server_name: str | None = None,
        cadata: bytes | None = None,
        pinned_der: bytes | None = None,  # aioquic cannot pin in the handshake: the endpoint checks after
    ) -> QuicConfiguration:
        config = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=alpns,
            connection_id_length=CONNECTION_ID_LENGTH,
            idle_timeout=idle_timeout,
            max_data=self.connection_window,
            max_stream_data=self.stream_window,
            max_datagram_size=max_datagram_size,
            max_datagram_frame_size=DATAGRAM_FRAME_LIMIT,
            server_name=server_name,
            cadata=cadata,
        )
        if initial_rtt is not None:
            config.initial_rtt = initial_rtt
        if cert_pem is not None and key_pem is not None:
            chain = load_pem_x509_certificates(cert_pem)
            config.certificate = chain[0]
            config.certificate_chain = chain[1:]
            config.private_key = load_pem_private_key(key_pem)
        return config

    def supported_versions(self, config: QuicConfiguration) -> list[int]:
        return list(config.supported_versions)

    def new_connection(
        self,
        config: QuicConfiguration,
        *,
        max_streams: int,
        reset_token: Callable[[bytes], bytes],
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> FlowControlledConnection:
        quic = FlowControlledConnection(
            configuration=config,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,  # set after our Retry
            stream_window=self.stream_window,
            connection_window=self.connection_window,
            reset_token=reset_token,
        )
        # before the transport parameters are written (client: connect(); server: first Initial)
        quic._local_max_streams_bidi.value = quic._local_max_streams_bidi.sent = max_streams
        quic._local_max_streams_uni.value = quic._local_max_streams_uni.sent = 0  # we use none
        return quic

    def open_stream(self, quic: FlowControlledConnection) -> int:
        """A new locally initiated bidirectional stream's id."""
        stream_id = quic.get_next_available_stream_id()
        # sending nothing creates the stream, so the next call gets the next id; the peer
        # learns of it with the first byte written
        quic.send_stream_data(stream_id, b"", False)
        return stream_id

    def next_admission(self, quic: FlowControlledConnection) -> float | None:
        """Nothing is ever held back (see release_held)."""
        return None

    def release_held(self, quic: FlowControlledConnection, now: float) -> bool:
        """Nothing is ever held back: aioquic's credit follows reading (see _qh3.py)."""
        return False

    def receive_segments(self, quic: FlowControlledConnection, buffer: bytes, segment: int, addr: Any, now: float) -> None:
        """A GRO run of datagrams: aioquic takes them one by one."""
        for data in segments(buffer, segment):
            quic.receive_datagram(data, addr, now)

    def probe_path_mtu(self, quic: FlowControlledConnection, size: int) -> None:
        quic.probe_path_mtu(size)

    def send_keepalive(self, quic: FlowControlledConnection, uid: int) -> None:
        """A PING, padded (see FlowControlledConnection._write_ping_frame)."""
        quic.send_ping(uid)

    # DATAGRAM frames

    def send_datagram(self, quic: FlowControlledConnection, data: bytes) -> None:
        quic.send_datagram_frame(data)

    def datagram_payload_limit(self, quic: FlowControlledConnection) -> int:
        """One 1-RTT packet of the current size (1200 until the MTU probe was acknowledged):
        aioquic keeps a DATAGRAM frame that fits no packet at the head of its queue forever."""
        header = 1 + len(quic._peer_cid.cid) + PACKET_NUMBER_SEND_SIZE
        return datagram_payload_limit(quic._max_datagram_size, header, quic._remote_max_datagram_frame_size)

    # connection state

    def closed_by_peer(self, quic: FlowControlledConnection) -> bool:
        return quic._state == QuicConnectionState.DRAINING

    def unsent(self, quic: FlowControlledConnection, stream_id: int) -> int:
        """Bytes queued on a stream that were never sent (flow control, congestion)."""
        stream = quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender.highest_offset

    def smoothed_rtt(self, quic: FlowControlledConnection) -> float | None:
        loss = quic._loss
        return loss._rtt_smoothed if loss._rtt_initialized else None

    def peer_reset_tokens(self, quic: FlowControlledConnection) -> list[bytes]:
        """The reset tokens of the peer's connection IDs we currently send to.

        Only those: RFC 9000 10.3.1 forbids matching tokens of IDs we never used or
        retired. The current one (from the transport parameters for the server's first
        ID, else from NEW_CONNECTION_ID) plus any reserved for a path being probed."""
        cids = [quic._peer_cid, *(path.peer_cid for path in quic._network_paths)]
        return [cid.stateless_reset_token for cid in cids if cid is not None and cid.stateless_reset_token]

    def peer_certificate_der(self, quic: FlowControlledConnection) -> bytes | None:
        cert = getattr(quic.tls, "_peer_certificate", None)
        return cert.public_bytes(Encoding.DER) if cert is not None else None

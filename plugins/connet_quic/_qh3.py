"""The qh3 adapter: the same interface as :class:`connet_quic._aioquic.AioquicLibrary`.

qh3 2.x keeps aioquic's sans-I/O *facade* (``QuicConnection.receive_datagram``,
``datagrams_to_send``, ``next_event``, the same event classes) over a native packet core,
so the endpoint's glue is reused unchanged. What differs, and what we do about it:

- **Stream limit.** qh3 hard-codes 100 concurrent peer streams, twice: in the native core
  (``local_max_streams_bidi``) and in the transport parameters its TLS bridge writes.
  :class:`Qh3Connection` creates the core with ``max_streams`` and its bridge rewrites the
  parameter. The core issues MAX_STREAMS itself as peer streams finish.
- **Receive-side backpressure, per connection only**: while a connection holds more unread
  bytes than ``unread_pause`` its incoming datagrams are held (``_qh3_connection`` says how
  and why; aioquic holds back stream credit instead).
- **Stateless reset, partly.** The first connection ID's token (the server's
  ``stateless_reset_token`` transport parameter) is written by the TLS bridge, which we
  construct, so it is derived as with aioquic; that is the token a client uses for the
  whole connection unless the connection ID changes (qh3 never migrates on its own).
  Tokens of further IDs (NEW_CONNECTION_ID) are drawn inside the native core and cannot
  be overridden, so a restarted peer cannot reset a connection that moved to one of them.
  For recognizing a peer's reset we only know that same first token (the core keeps the
  others to itself). Keepalive pings cannot be padded (the core builds packets), so a
  keepalive also carries a 16-byte DATAGRAM frame (both adapters accept small ones),
  which makes it longer than the 41 bytes a restarted peer answers.
- **Peer close vs. local close.** qh3 reports both as ``ConnectionTerminated``; the
  native event kind tells them apart, so the connection watches the core's events
  through a proxy (``_qh3_core``).
- **"reserved stream is missing".** qh3 2.1.0's core loses a connection when a stream
  completes while a retransmission copied at a PTO is still reserved for it; not worked
  around (``_qh3_core`` says what was tried; docs/performance.md, Known problems).
- **A FIN alone, after the data.** qh3 2.1.0 never resends a data-less FIN whose packet is
  lost while the stream's earlier data is unacknowledged, so such a FIN is held until that
  data is acknowledged (``_qh3_fin``; docs/performance.md, Known problems).
- **Self-signed server certificates.** webpki also refuses a ``CA:TRUE`` certificate as the
  end entity (what ``openssl req -x509`` makes); a leaf byte-identical to one of the
  configured CA certificates is accepted, with its dates and name checked as aioquic does
  (``_qh3_trust``).
- **Certificate pinning.** qh3 verifies chains with webpki rules, which refuse our
  self-signed CA identity certificates as end entities, so a pinned dial turns chain
  verification off and has qh3 assert the exact SHA-256 fingerprint inside the handshake
  instead (the endpoint compares the hash again afterwards, as for aioquic). The
  ``server_name`` is then not checked: the certificate is exactly the announced one.
  ``cafile`` / default-store dials verify normally.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any, Callable

from qh3._hazmat import Buffer
from qh3.quic import events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

from connet_quic._adapter import (
    CONNECTION_ID_LENGTH,
    DATAGRAM_FRAME_LIMIT,
    SharedLibraryAdapter,
    datagram_payload_limit,
)
from connet_quic._qh3_connection import Qh3Connection

SMALLEST_MAX_DATAGRAM_SIZE = 1200
# a DATAGRAM frame of this many zero bytes makes a keepalive packet longer than the 41
# bytes a restarted peer answers (a bare qh3 PING packet is ~29)
KEEPALIVE_FILLER = 16
# the packet number length the core may use in a 1-RTT packet (the most: 4 bytes), so a
# DATAGRAM frame sized for it always fits
QH3_PACKET_NUMBER_SIZE = 4
# Unread bytes above which a connection holds its incoming datagrams back (see
# _qh3_connection). 32 MiB was tried: qh3 then stalled a stream more often (docs/performance.md).
DEFAULT_UNREAD_PAUSE = 8 * 1024 * 1024
DEFAULT_HELD_LIMIT = 8 * 1024 * 1024  # bytes of datagrams held while paused; more are dropped
DEFAULT_ADMIT_INTERVAL = 0.5  # seconds between held datagrams let in while paused (idle timeout: 3 s)


class Qh3Library(SharedLibraryAdapter):
    """The adapter the endpoint uses over qh3; see the module docstring."""

    name = "qh3"
    events = events
    smallest_max_datagram_size = SMALLEST_MAX_DATAGRAM_SIZE
    connection_id_length = CONNECTION_ID_LENGTH
    _buffer = Buffer
    _pull_quic_header = staticmethod(pull_quic_header)
    _encode_version_negotiation = staticmethod(encode_quic_version_negotiation)
    _packet_type = QuicPacketType

    def __init__(
        self,
        *,
        stream_window: int = 4 * 1024 * 1024,
        connection_window: int = 16 * 1024 * 1024,
        unread_pause: int = DEFAULT_UNREAD_PAUSE,
        held_limit: int = DEFAULT_HELD_LIMIT,
        admit_interval: float = DEFAULT_ADMIT_INTERVAL,
    ) -> None:
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.unread_pause = unread_pause
        self.held_limit = held_limit
        self.admit_interval = admit_interval

    # configuration

    def configuration(
        self,
        *,
        is_client: bool,
        alpns: list[str],
        idle_timeout: float,
        max_datagram_size: int,
        initial_rtt: float | None,
        probe_path_mtu: bool = True,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        server_name: str | None = None,
        cadata: bytes | None = None,
        pinned_der: bytes | None = None,
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
        config.probe_datagram_size = probe_path_mtu  # the core's own DPLPMTUD
        if pinned_der is not None:
            # qh3 verifies with webpki rules, which refuse a self-signed CA certificate as
            # the end entity ("unacceptable"): ours are. So no chain check, but an exact
            # SHA-256 match inside the handshake — stricter than the anchor, and the
            # certificate then names whatever it names (the endpoint compares it again).
            config.verify_mode = ssl.CERT_NONE
            config.cadata = None
            config.assert_fingerprint = hashlib.sha256(pinned_der).hexdigest()
        if cert_pem is not None and key_pem is not None:
            chain = load_pem_x509_certificates(cert_pem)
            config.certificate = chain[0]
            config.certificate_chain = chain[1:]
            config.private_key = load_pem_private_key(key_pem)
        return config

    def supported_versions(self, config: QuicConfiguration) -> list[int]:
        return [int(v) for v in config.supported_versions]

    def new_connection(
        self,
        config: QuicConfiguration,
        *,
        max_streams: int,
        reset_token: Callable[[bytes], bytes],
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> Qh3Connection:
        return Qh3Connection(
            configuration=config,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,  # set after our Retry
            max_streams=max_streams,
            reset_token=reset_token,
            unread_pause=self.unread_pause,
            held_limit=self.held_limit,
            admit_interval=self.admit_interval,
        )

    def open_stream(self, quic: Qh3Connection) -> int:
        """A new locally initiated bidirectional stream's id."""
        # through the native core's own allocator: an empty send on an id the core never
        # allocated leaves its stream bookkeeping out of step with ours
        return quic._open_stream()

    def next_admission(self, quic: Qh3Connection) -> float | None:
        return quic.next_admission()

    def release_held(self, quic: Qh3Connection, now: float) -> bool:
        """Datagrams the connection held back while paused go to the core now if they may;
        True if the caller should take the events (see Qh3Connection.release_held)."""
        return quic.release_held(now)

    def receive_segments(self, quic: Qh3Connection, buffer: bytes, segment: int, addr: Any, now: float) -> None:
        """A GRO run of datagrams, handed to the native core in one call."""
        quic.receive_gro_buffer(buffer, segment, addr, now)

    def probe_path_mtu(self, quic: Qh3Connection, size: int) -> None:
        """Nothing to do: qh3's core searches the path MTU itself (DPLPMTUD), as a client only."""

    def send_keepalive(self, quic: Qh3Connection, uid: int) -> None:
        """A PING, and filler in a DATAGRAM frame where the peer accepts one: the core
        builds packets itself, so a PING cannot be padded as with aioquic."""
        quic.send_ping(uid)
        limit = quic._remote_max_datagram_frame_size
        if limit is not None and limit >= KEEPALIVE_FILLER + 4:  # frame type and length fit too
            quic.send_datagram_frame(bytes(KEEPALIVE_FILLER))

    # DATAGRAM frames

    def send_datagram(self, quic: Qh3Connection, data: bytes) -> None:
        quic.send_datagram_frame(data)

    def datagram_payload_limit(self, quic: Qh3Connection) -> int:
        """From the core's current path MTU (``active_path[5]``; a server's stays at 1200:
        qh3 2.1 probes as a client only) with a 4-byte packet number: a DATAGRAM frame that
        fits no packet fails the whole connection ("packet builder capacity exhausted")."""
        core = quic._core
        if core is None or not quic._handshake_complete:
            return 0
        header = 1 + CONNECTION_ID_LENGTH + QH3_PACKET_NUMBER_SIZE
        return datagram_payload_limit(core.active_path[5], header, quic._remote_max_datagram_frame_size)

    # connection state

    def closed_by_peer(self, quic: Qh3Connection) -> bool:
        return quic.closed_by_peer

    def unsent(self, quic: Qh3Connection, stream_id: int) -> int:
        return quic.get_send_buffer_size(stream_id)

    def smoothed_rtt(self, quic: Qh3Connection) -> float | None:
        core = quic._core
        return core.smoothed_rtt if core is not None else None

    def peer_reset_tokens(self, quic: Qh3Connection) -> list[bytes]:
        """Only the server's first token, from its transport parameters (see module doc)."""
        if not quic._is_client:
            return []
        parameters = quic._applied_transport_parameters
        token = parameters.stateless_reset_token if parameters is not None else None
        return [token] if token else []

    def peer_certificate_der(self, quic: Qh3Connection) -> bytes | None:
        cert = quic.get_peercert()
        return cert.public_bytes() if cert is not None else None


"""What the endpoint needs of a QUIC library adapter, as typing Protocols.

:mod:`connet_quic.endpoint` (its router and connections) drives a sans-I/O QUIC library
through an adapter (:class:`~connet_quic._aioquic.AioquicLibrary`,
:class:`~connet_quic._qh3.Qh3Library`) and the adapter's connection objects. These Protocols
name exactly the members the endpoint uses, each with the contract the endpoint relies on,
so a third adapter knows what to provide and the endpoint types its library as
``QuicLibrary[QuicLibraryConnection]`` instead of one concrete adapter.
``tests/unit/test_library_protocol.py`` checks that both adapters and their connections
provide every member with a compatible signature (``runtime_checkable`` alone would only
check names).

Times are on the endpoint's clock (the event loop's), in seconds; addresses are the
library's ``(host, port)`` tuples; stream ids are QUIC stream ids.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

__all__ = ["CloseEvent", "PacketHeader", "QuicEventTypes", "QuicLibrary", "QuicLibraryConnection"]


@runtime_checkable
class PacketHeader(Protocol):
    """A parsed QUIC packet header (the endpoint routes datagrams by it)."""

    packet_type: Any  # compared only with the adapter's is_initial / is_short_header
    version: int | None
    destination_cid: bytes
    source_cid: bytes
    token: bytes | None  # an Initial's address-validation token (admission reads it)


@runtime_checkable
class CloseEvent(Protocol):
    """The close a connection is going through (``QuicLibrary.close_event``)."""

    error_code: int  # the application's close code, or a transport error code
    frame_type: int | None  # not None for a transport-level close
    reason_phrase: str


class QuicEventTypes(Protocol):
    """The library's event classes (its ``events`` module). The endpoint dispatches on
    ``type(event) is ...``, so each must be the exact class ``next_event`` returns."""

    StreamDataReceived: type  # .stream_id, .data: bytes, .end_stream: bool
    StreamReset: type  # .stream_id, .error_code
    StopSendingReceived: type  # .stream_id, .error_code
    ConnectionIdIssued: type  # .connection_id: bytes — route datagrams for it to us
    ConnectionIdRetired: type  # .connection_id: bytes — stop routing it
    HandshakeCompleted: type  # .alpn_protocol: str | None
    ConnectionTerminated: type  # .error_code, .reason_phrase — the last event
    DatagramFrameReceived: type  # .data: bytes — one DATAGRAM frame (RFC 9221)


@runtime_checkable
class QuicLibraryConnection(Protocol):
    """One connection of the library, as the endpoint drives it (aioquic's sans-I/O API).

    The endpoint keeps ``unread_by_stream`` and ``unread_total`` up to date (bytes handed
    to a Stream and not yet read by the application); the connection uses them to decide
    how much receive credit to give (see _aioquic.py and _qh3.py)."""

    unread_by_stream: dict[int, int]
    unread_total: int

    def connect(self, addr: Any, now: float) -> None:
        """Start the handshake as the client towards ``addr``. Called once, right after
        ``new_connection`` for a dialed connection."""

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """Take one UDP datagram from ``addr``. Never raises for bad input: a datagram the
        connection cannot use is dropped (or closes the connection, as QUIC requires)."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Every datagram that may be sent now, with its destination address. The endpoint
        calls it after each input (datagram, timer, application call) and sends them all."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due next, or None for no timer."""

    def handle_timer(self, now: float) -> None:
        """The timer from :meth:`get_timer` fired (loss detection, idle timeout, ...)."""

    def next_event(self) -> Any | None:
        """The next event (an instance of one of ``QuicLibrary.events``), or None. The
        endpoint drains them after every input; ``ConnectionTerminated`` is the last."""

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue ``data`` (and FIN if ``end_stream``) on a stream. Never blocks: the endpoint
        bounds what it queues with ``QuicLibrary.unsent``."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abandon sending on a stream (RESET_STREAM with ``error_code``)."""

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING with ``error_code``)."""

    def close(self, error_code: int = 0, frame_type: int | None = None, reason_phrase: str = "") -> None:
        """Close the connection with an application ``error_code`` (keyword arguments:
        the endpoint passes ``error_code`` and ``reason_phrase`` by name)."""

    def stream_credit_due(self, stream_id: int) -> bool:
        """Whether the application's last read on ``stream_id`` made something worth
        sending now (a credit update, or held datagrams to release): then the endpoint
        runs a send round at once instead of waiting for the next input."""


C = TypeVar("C", bound=QuicLibraryConnection)


@runtime_checkable
class QuicLibrary(Protocol[C]):
    """A library adapter: configuration, connections and the library internals the
    endpoint needs, behind stable names. ``C`` is the adapter's connection class."""

    name: str  # "aioquic", "qh3": for logs and status
    events: QuicEventTypes
    smallest_max_datagram_size: int  # an Initial datagram shorter than this is dropped unanswered
    connection_id_length: int  # of the connection IDs we choose (a Retry's source CID too)

    # configuration and connections

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
    ) -> Any:
        """The library's configuration object (opaque to the endpoint) for one side. A
        listener passes its PEM certificate and key; a dialer ``server_name`` and either
        ``cadata`` (PEM CAs) or ``pinned_der``, the exact certificate it accepts (the
        endpoint compares the certificate again after the handshake, so an adapter may
        check it in the handshake or not at all)."""

    def supported_versions(self, config: Any) -> list[int]:
        """The QUIC versions ``config`` speaks (for version negotiation), as ints."""

    def new_connection(
        self,
        config: Any,
        *,
        max_streams: int,
        reset_token: Callable[[bytes], bytes],
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> C:
        """A new connection: a dialer's (``config.is_client``) or one accepting the Initial
        whose destination CID is ``original_destination_connection_id`` (after our Retry,
        ``retry_source_connection_id`` is the source CID that Retry carried). It lets the
        peer open ``max_streams`` bidirectional streams at once and no unidirectional ones,
        and gives every connection ID it issues the token ``reset_token(cid)`` where the
        library lets it (so a restarted endpoint can reset it, see _reset.py)."""

    def open_stream(self, quic: C) -> int:
        """A new locally opened bidirectional stream's id; the peer learns of it with the
        first byte (or FIN) sent on it."""

    def receive_segments(self, quic: C, buffer: bytes, segment: int, addr: Any, now: float) -> None:
        """A GRO run: ``buffer`` is datagrams of ``segment`` bytes (the last may be shorter)
        from ``addr``, in order."""

    def next_admission(self, quic: C) -> float | None:
        """When datagrams held back by flow control must be let in even without a read
        (the endpoint's timer wakes for it), or None."""

    def release_held(self, quic: C, now: float) -> bool:
        """Hand datagrams held back by flow control to the connection if due; True if the
        endpoint must then drain events (called before every send round)."""

    def probe_path_mtu(self, quic: C, size: int) -> None:
        """The handshake is done: probe whether datagrams of ``size`` bytes get through (or
        nothing, where the library probes by itself)."""

    def send_keepalive(self, quic: C, uid: int) -> None:
        """Queue a keepalive PING with id ``uid``, in a datagram long enough (>= 41 bytes)
        for a restarted peer to answer it with a stateless reset."""

    # DATAGRAM frames (RFC 9221)

    def send_datagram(self, quic: C, data: bytes) -> None:
        """Queue one DATAGRAM frame carrying ``data``; the endpoint sends it only when it
        is at most :meth:`datagram_payload_limit` (so it fits one packet)."""

    def datagram_payload_limit(self, quic: C) -> int:
        """The largest DATAGRAM payload that fits one packet on the path now (it grows
        once a path MTU probe succeeded) and that the peer accepts; 0 when it accepts none."""

    # connection state

    def host_cid(self, quic: C) -> bytes:
        """The connection ID the connection chose for itself first (route by it)."""

    def close_event(self, quic: C) -> CloseEvent | None:
        """The close under way (ours, the peer's or the idle timeout's), else None."""

    def closed_by_peer(self, quic: C) -> bool:
        """Whether the close under way came from the peer."""

    def is_transport_close(self, event: CloseEvent) -> bool:
        """A transport-level CONNECTION_CLOSE, not an application one."""

    def unsent(self, quic: C, stream_id: int) -> int:
        """Bytes queued on the stream and not sent yet (flow control, congestion): the
        endpoint's send-side backpressure. 0 for an unknown stream."""

    def smoothed_rtt(self, quic: C) -> float | None:
        """The smoothed RTT in seconds, None before the first sample."""

    def peer_reset_tokens(self, quic: C) -> list[bytes]:
        """The stateless reset tokens of the peer's connection IDs we currently send to
        (only those: RFC 9000 10.3.1), to recognise a reset from a restarted peer."""

    def peer_certificate_der(self, quic: C) -> bytes | None:
        """The peer's end-entity certificate (DER) once the handshake has it, else None."""

    # datagrams before there is a connection

    def parse_header(self, data: bytes) -> PacketHeader | None:
        """The datagram's first packet header, or None for a datagram that is not QUIC."""

    def is_initial(self, header: PacketHeader) -> bool:
        """An Initial packet (the only one that may open a connection)."""

    def is_short_header(self, header: PacketHeader) -> bool:
        """A 1-RTT packet (the only kind a stateless reset can look like)."""

    def needs_version_negotiation(self, header: PacketHeader, supported: list[int]) -> bool:
        """A packet of a version we do not speak that deserves a Version Negotiation
        (never one answering a Version Negotiation: that would loop)."""

    def version_negotiation(self, header: PacketHeader, supported: list[int]) -> bytes:
        """The Version Negotiation datagram answering ``header``."""

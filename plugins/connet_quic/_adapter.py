"""What the library adapters share: aioquic and qh3 expose the same names for packet headers,
version negotiation and connection state, so one implementation serves both; each adapter
names its library's functions in class attributes."""

from __future__ import annotations

from typing import Any, Callable

CONNECTION_ID_LENGTH = 8  # every endpoint must use the same: short headers do not carry it
# DATAGRAM frames (RFC 9221) we accept: only as keepalive filler (see the adapters'
# send_keepalive), so small; advertising them lets a peer make its keepalive long enough
# to draw a stateless reset from a restarted endpoint
DATAGRAM_FRAME_LIMIT = 64


class SharedLibraryAdapter:
    # set by each adapter to its library's objects
    _buffer: Callable[..., Any]
    _pull_quic_header: Callable[..., Any]
    _encode_version_negotiation: Callable[..., bytes]
    _packet_type: Any

    # datagrams

    def parse_header(self, data: bytes) -> Any:
        """The packet header, or None for a datagram that is not QUIC."""
        try:
            return self._pull_quic_header(self._buffer(data=data), host_cid_length=CONNECTION_ID_LENGTH)
        except ValueError:
            return None

    def is_initial(self, header: Any) -> bool:
        return header.packet_type == self._packet_type.INITIAL

    def is_short_header(self, header: Any) -> bool:
        return header.packet_type == self._packet_type.ONE_RTT

    def needs_version_negotiation(self, header: Any, supported: list[int]) -> bool:
        # a Version Negotiation packet has version 0: never answer one (reflection loops)
        return (
            header.packet_type != self._packet_type.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in supported
        )

    def version_negotiation(self, header: Any, supported: list[int]) -> bytes:
        return self._encode_version_negotiation(
            source_cid=header.destination_cid, destination_cid=header.source_cid, supported_versions=supported
        )

    # connection state

    def host_cid(self, quic: Any) -> bytes:
        return quic.host_cid

    def close_event(self, quic: Any) -> Any:
        """The close that is under way (ours, the peer's or the idle timeout's), else None."""
        return quic._close_event

    def is_transport_close(self, event: Any) -> bool:
        """A transport-level CONNECTION_CLOSE (frame type set), not an application one."""
        return event.frame_type is not None

"""What the library adapters share: aioquic and qh3 expose the same names for packet headers,
version negotiation and connection state, so one implementation serves both; each adapter
names its library's functions in class attributes."""

from __future__ import annotations

from typing import Any, Callable

CONNECTION_ID_LENGTH = 8  # every endpoint must use the same: short headers do not carry it
# The largest DATAGRAM frame (RFC 9221) we accept, type and length included: they carry UDP
# tunnels (connet_core.client.udp_*) and keepalive filler (the adapters' send_keepalive).
# What is sent is bounded by the path instead (datagram_payload_limit); this only must not
# be below any packet we could receive.
DATAGRAM_FRAME_LIMIT = 65535
# AEAD tag of every QUIC packet protection (AES-GCM, ChaCha20-Poly1305)
AEAD_TAG = 16
# a DATAGRAM frame's type (1 byte) and length (a 2-byte varint for 64..16383 bytes)
DATAGRAM_FRAME_HEADER = 3


def datagram_payload_limit(packet_size: int, header: int, peer_limit: int | None) -> int:
    """The largest DATAGRAM payload in one 1-RTT packet of ``packet_size`` bytes whose
    header takes ``header`` bytes, capped by the peer's max_datagram_frame_size (None:
    the peer accepts no DATAGRAM frames)."""
    if not peer_limit:
        return 0
    return max(0, min(packet_size - header - AEAD_TAG, peer_limit) - DATAGRAM_FRAME_HEADER)


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

"""Why a connection closed, in our terms: the library's close under way as a CloseInfo."""

from __future__ import annotations

from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo

from connet_quic.library import QuicLibrary, QuicLibraryConnection


def close_info_of(
    lib: QuicLibrary[QuicLibraryConnection], quic: QuicLibraryConnection, *, in_timer: bool
) -> CloseInfo:
    """The CloseInfo for the close ``quic`` is going through (``in_timer``: the library
    closed it in its timer, not on a datagram or a call of ours)."""
    event = lib.close_event(quic)
    if event is None:  # terminated without a close reason: treat as a timeout
        return CloseInfo(CloseCode.TIMEOUT, "connection timed out", by_peer=False)
    if lib.closed_by_peer(quic):
        if lib.is_transport_close(event):
            # a transport error is not one of our close codes: NO_ERROR stays 0
            code = CloseCode.OK if event.error_code == 0 else CloseCode.PROTOCOL_ERROR
            return CloseInfo(code, f"transport close 0x{event.error_code:x}: {event.reason_phrase}", by_peer=True)
        return CloseInfo(event.error_code, event.reason_phrase, by_peer=True)
    if not lib.is_transport_close(event):
        # an application close the adapter made itself (qh3: receive buffer overflow)
        return CloseInfo(event.error_code, event.reason_phrase, by_peer=False)
    if in_timer:
        # aioquic's only timer-driven close is the idle timeout
        return CloseInfo(CloseCode.TIMEOUT, "idle timeout", by_peer=False)
    # the library closed on a local error (protocol violation, TLS alert)
    return CloseInfo(CloseCode.PROTOCOL_ERROR, f"0x{event.error_code:x}: {event.reason_phrase}", by_peer=False)

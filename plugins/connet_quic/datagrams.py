"""One connection's unreliable datagrams (QUIC DATAGRAM frames, RFC 9221): the
:class:`connet_core.transport.Datagrams` of a :class:`~connet_quic.connection.QuicEndpointConnection`.

Kept apart from the connection's stream glue: the connection only hands received frames to
:meth:`QuicDatagrams.received` and tells it when it closed. Sending asks the adapter how
large a DATAGRAM frame fits one packet on the path now (``datagram_payload_limit``): a
larger one is refused here, never queued, because a library would otherwise hold it (and
everything queued after it) forever, or fail the connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from connet_quic.library import QuicLibrary, QuicLibraryConnection

if TYPE_CHECKING:
    from connet_quic.connection import QuicEndpointConnection

logger = logging.getLogger("connet.quic")

Receiver = Callable[[bytes], None]


class QuicDatagrams:
    """Implements :class:`connet_core.transport.Datagrams` over the library's DATAGRAM frames."""

    def __init__(self, conn: "QuicEndpointConnection", library: QuicLibrary[QuicLibraryConnection],
                 quic: QuicLibraryConnection, send_soon: Callable[[], None]) -> None:
        self._conn = conn
        self._send_soon = send_soon  # one send round for a burst of datagrams
        self._lib = library
        self._quic = quic
        self._receiver: Receiver | None = None
        self.sent = 0
        self.received_count = 0
        self.refused = 0  # too large for the path, or after the close
        self.unclaimed = 0  # arrived with no receiver

    def max_size(self) -> int:
        if self._conn.closed:
            return 0
        return max(0, self._lib.datagram_payload_limit(self._quic))

    def send(self, data: bytes) -> bool:
        if len(data) > self.max_size():
            self.refused += 1
            return False
        self._lib.send_datagram(self._quic, data)
        self.sent += 1
        self._send_soon()
        return True

    def set_receiver(self, receiver: Receiver | None) -> None:
        self._receiver = receiver

    # for the connection

    def received(self, data: bytes) -> None:
        receiver = self._receiver
        if receiver is None or self._conn.closed:
            self.unclaimed += 1
            return
        self.received_count += 1
        try:
            receiver(data)
        except Exception:  # a receiver's bug must not end the connection's event processing
            logger.exception("datagram receiver failed")

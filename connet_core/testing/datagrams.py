"""The in-memory transport's datagrams (:class:`connet_core.transport.Datagrams`): each one
delivered to the peer's receiver on the next loop iteration, whole, unless the link is
partitioned or either side closed (then dropped, as on a real path)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from connet_core.testing.streams import MemoryConnection

# what a QUIC packet of the probed size leaves for a DATAGRAM payload (header, tag, frame)
PACKET_OVERHEAD = 30


class MemoryDatagrams:
    def __init__(self, conn: "MemoryConnection") -> None:
        self._conn = conn
        self._receiver: Callable[[bytes], None] | None = None
        self.sent = 0

    def max_size(self) -> int:
        if self._conn.closed:
            return 0
        return self._conn._options.probe_datagram_size - PACKET_OVERHEAD

    def send(self, data: bytes) -> bool:
        if len(data) > self.max_size():
            return False
        self.sent += 1
        if not self._conn._link.partitioned:
            asyncio.get_running_loop().call_soon(self._conn.peer.datagrams._deliver, bytes(data))
        return True

    def set_receiver(self, receiver: Callable[[bytes], None] | None) -> None:
        self._receiver = receiver

    def _deliver(self, data: bytes) -> None:
        if self._receiver is not None and not self._conn.closed:
            self._receiver(data)

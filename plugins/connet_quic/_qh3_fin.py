"""qh3: a FIN written after the stream's data has left goes out once that data is acknowledged.

qh3 2.1.0 loses such a FIN for good (docs/performance.md, Known problems). A FIN written
when the stream's data has already been sent travels in a STREAM frame of its own, with no
data (offset = length = the final size). When that frame's packet is declared lost (or
acknowledged) while some earlier data of the stream is still unacknowledged,
``SendStream::on_data_delivery`` (``src/quic/stream.rs`` 741-744, and 721-724 for the
acknowledgement) adds the empty range ``final size .. final size`` to a range set, which
fails (``RangeSetError::EmptyRange``) and returns before the FIN is marked pending again (752-757;
acknowledged: 727-731); the caller drops the error (``let _ =``, ``src/quic/connection.rs``
3197). A lost FIN is then never sent again and the peer waits for the end of the stream
until the idle timeout; an acknowledged one is never recorded, so the stream never
finishes on the sender. Reordering makes it likely: packets declared lost that were only
late, which is what holding datagrams back (``_qh3.py``, receive-side backpressure) does
to the peer. ``tests/upstream/qh3_reordered_fin_stall.py`` shows it with qh3 alone.

So such a FIN is held here until the stream's data is acknowledged: a snapshot of the
newest packet in flight is taken when the congestion window has room (the core sent what
it had reserved), a PING makes the peer acknowledge promptly (ACK-only packets are only
acknowledged along with others), and when every packet up to the snapshot is resolved
without a loss or a PTO since, twice in a row (``CONFIRMATIONS``), every byte sent before
was acknowledged: the FIN goes to the core, whose empty frame then meets ``final size ==
acknowledged prefix`` and takes the path that works. A loss or PTO meanwhile (whose
retransmissions a snapshot may not cover) starts over. A FIN written while data is still
queued rides on that data's last frame and is not held; nor is the FIN of a stream that
carried no data. It costs such a FIN about two round trips. Measured with the
reproducer's simulation: 39-43 of 1500 runs stall with qh3 alone, 0 of 1500 with connet's
adapter (``tests/upstream/test_qh3_workarounds.py``).
"""

from __future__ import annotations

from typing import Any

ROOM = 1500  # congestion window room (bytes) above which the core has nothing queued to send
# snapshots resolved in a row, without a loss or PTO, before a FIN goes: the pacer may hold
# a retransmission back past the first one (the core's pacing deadline cannot tell: it is
# reported even when nothing waits), the second then covers it
CONFIRMATIONS = 2
PING_ID = 1 << 62  # the gate's PING id (the endpoint's keepalive ids count up from 1)


class FinGate:
    """The FINs held back on one connection; see the module docstring."""

    def __init__(self) -> None:
        # stream id -> (newest packet number in flight, loss_total, pto_total, snapshots
        # resolved so far) when the snapshot was taken, or None until one can be
        self.waiting: dict[int, tuple[int, int, int, int] | None] = {}
        self.carried_data: set[int] = set()  # streams that were given data

    def hold(self, core: Any, stream_id: int, data: Any, end_stream: bool) -> bool:
        """Whether this write is a FIN to hold back (then it is held, not written)."""
        if len(data):
            if end_stream:
                self.carried_data.discard(stream_id)  # the FIN rides on this data
            else:
                self.carried_data.add(stream_id)
            return False
        if not end_stream:
            return False
        if stream_id not in self.carried_data:
            return False  # no data to wait for
        self.carried_data.discard(stream_id)
        if core.get_send_buffer_size(stream_id):
            return False  # the FIN rides on the data still queued
        self.waiting[stream_id] = None
        return True

    def forget(self, stream_id: int) -> None:
        """The stream was reset: its FIN will never be wanted."""
        self.waiting.pop(stream_id, None)
        self.carried_data.discard(stream_id)

    def due(self, core: Any, ping: Any) -> list[int]:
        """The streams whose FIN may go now (removed from the gate)."""
        if core.congestion_window - core.bytes_in_flight < ROOM:
            return []  # something may still be queued: a snapshot now would miss it
        outstanding = core.outstanding_application_packets
        oldest = outstanding[0][0] if outstanding else None
        newest = outstanding[-1][0] if outstanding else -1
        losses = (core.loss_total, core.pto_total)
        released = []
        snapshots = False
        for stream_id, snapshot in list(self.waiting.items()):
            if snapshot is None or snapshot[1:3] != losses:
                self.waiting[stream_id] = (newest, *losses, 0)
                snapshots = True
            elif oldest is None or oldest > snapshot[0]:
                if snapshot[3] + 1 < CONFIRMATIONS:
                    self.waiting[stream_id] = (newest, *losses, snapshot[3] + 1)
                    snapshots = True
                else:
                    del self.waiting[stream_id]
                    released.append(stream_id)
        if snapshots:
            ping(PING_ID)  # one for all the snapshots just taken
        return released

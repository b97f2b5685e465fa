"""The proxy between qh3's Python facade and its native connection core.

qh3 reports a peer's close and a local one alike as ``ConnectionTerminated``; the native
event kind tells them apart, so ``next_event`` notes a ``peer_closed``.

Not worked around here: qh3 2.1.0's **"reserved stream is missing"** (docs/performance.md,
Known problems; ``tests/upstream/qh3_reserved_stream.py``). At a PTO the core copies the
data of the packets in flight back into their streams (``DeliveryOutcome::ProbeCopy``,
``src/quic/recovery.rs``) and reserves frames for it; what does not fit into the probes
stays reserved in ``pending_streams`` while the congestion window is full
(``poll_transmit``, ``src/quic/connection.rs`` 2131-2136). If an ACK of the *original*
packets then completes such a stream, the core removes it as the facade pops its
``StreamFinished`` (``next_event``, connection.rs 902-903) without dropping the
reservation, and the next ``poll_transmit`` fails to commit it (connection.rs 3145) after
building a packet it never sends: the connection is lost (the endpoint closes it with
INTERNAL_ERROR). Two ways around it were tried in this proxy: letting the core send right
after each input, before the facade drains its events, together with holding the events
back while a PTO copy could be waiting, fixed it in the reproducer's simulation (13 of
6000 runs failed without, 0 of 3000 with) but stalled whole connections in the
1000-connection e2e test (5 of 26 runs went idle until the idle timeout; 0 of 10 without,
cause not found in the time); holding the events back alone does not help (9 of 3000).
"""

from __future__ import annotations

from typing import Any, Callable


class CoreProxy:
    """Forwards everything to qh3's native core, noting the kinds of close events."""

    def __init__(self, core: Any, on_peer_closed: Callable[[], None], receive_datagram: Callable[..., Any] | None = None) -> None:
        self._core = core
        self._on_peer_closed = on_peer_closed
        if receive_datagram is not None:  # the core's, wrapped (an instance attribute: no __getattr__)
            self.receive_datagram = receive_datagram

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._core, name)
        if callable(value):
            setattr(self, name, value)  # next time found without __getattr__ (hot path)
        return value

    def next_event(self) -> tuple[Any, ...] | None:
        event = self._core.next_event()
        if event is not None and event[0] == "peer_closed":
            self._on_peer_closed()
        return event

"""One connection's clock: the time given to the library, its one timer (the library's timer,
pacing included, the keepalive and the handshake deadline) and the send soon after a call.

A mixin of :class:`connet_quic.connection.QuicEndpointConnection`, which owns the state it
reads (``_quic``, ``_loop``, the deadlines) and the calls the timer makes (event processing,
``transmit``, failing the handshake): this module only keeps time.
"""

from __future__ import annotations

import asyncio
import logging

from connet_core.errors import DialError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import CloseInfo, TransportOptions

from connet_quic.addresses import Address
from connet_quic.library import QuicLibrary, QuicLibraryConnection
from connet_quic.wiring import contained

logger = logging.getLogger("connet.quic")

# how early the event loop may run a timer (uvloop/libuv count in milliseconds)
TIMER_SLACK = 0.001


class ConnectionClock:
    """The timer half of a connection (see the module docstring)."""

    # the connection's state this half reads and sets (QuicEndpointConnection.__init__)
    _lib: QuicLibrary[QuicLibraryConnection]
    _quic: QuicLibraryConnection
    _loop: asyncio.AbstractEventLoop
    _options: TransportOptions
    _remote: Address
    _clock: float
    _timer: asyncio.TimerHandle | None
    _timer_at: float | None
    _transmit_handle: asyncio.Handle | None
    _handshake_deadline: float | None
    _handshake_done: asyncio.Future[None]
    _next_ping_at: float | None
    _ping_uid: int
    _terminated: bool
    _close_info: CloseInfo | None

    # and the connection's calls it makes
    def transmit(self, now: float | None = None) -> None:
        raise NotImplementedError

    def _process_events(self, *, in_timer: bool) -> None:
        raise NotImplementedError

    def _fail_handshake(self, error: DialError) -> None:
        raise NotImplementedError

    def _mark_closed(self, info: CloseInfo) -> None:
        raise NotImplementedError

    def _library_time(self, at_least: float = 0.0) -> float:
        """The time to give the library: the loop's clock, never earlier than a time we
        already gave it (a timer may act slightly ahead, see _on_timer; qh3 refuses a
        clock that goes back)."""
        now = self._loop.time()
        if now < at_least:
            now = at_least
        if now < self._clock:
            return self._clock
        self._clock = now
        return now

    def _transmit_soon(self) -> None:
        if self._transmit_handle is None and not self._terminated:
            self._transmit_handle = self._loop.call_soon(self.transmit)

    def _arm_timer(self) -> None:
        due = self._quic.get_timer()
        if self._handshake_deadline is not None and (due is None or self._handshake_deadline < due):
            due = self._handshake_deadline
        if self._next_ping_at is not None and (due is None or self._next_ping_at < due):
            due = self._next_ping_at
        admit = self._lib.next_admission(self._quic)  # qh3's trickle while holding (see _qh3.py)
        if admit is not None and (due is None or admit < due):
            due = admit
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = due
        if due is not None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        contained(self, "in its timer", self._timer_due)

    def _timer_due(self) -> None:
        now = self._library_time()
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            self._on_handshake_timeout()
        if self._next_ping_at is not None and now >= self._next_ping_at and self._close_info is None:
            self._ping_uid += 1
            self._lib.send_keepalive(self._quic, self._ping_uid)
            self._next_ping_at = now + self._options.keepalive_interval
        quic_due = self._quic.get_timer()
        if quic_due is not None and now < quic_due <= now + TIMER_SLACK:
            # the loop woke us early (its timers have ~1 ms resolution, the pacer's
            # gaps are microseconds): act as at the due time instead of re-arming
            # the same timer and spinning until the clock gets there
            now = self._library_time(at_least=quic_due)
        if quic_due is not None and now >= quic_due:
            self._quic.handle_timer(now)
        self._process_events(in_timer=True)
        self.transmit(now)

    def _on_handshake_timeout(self) -> None:
        if self._handshake_done.done() or self._close_info is not None:
            return
        timeout = self._options.handshake_timeout
        self._quic.close(error_code=CloseCode.TIMEOUT, reason_phrase="handshake timeout")
        self._fail_handshake(DialError(f"QUIC handshake with {HostPort(*self._remote)} timed out"))
        self._mark_closed(CloseInfo(CloseCode.TIMEOUT, "handshake timeout", by_peer=False))
        logger.debug("handshake with %s timed out after %.1fs", HostPort(*self._remote), timeout)

"""What an endpoint refuses or drops, counted and logged without flooding the log.

A flood is many datagrams of a few kinds; a log line per datagram is a second flood (1.7 MB
of ``No common ALPN protocols`` warnings per 20 s before this). So every event is counted
(:attr:`Refusals.counters`, exported by the engines' status as
``connet_<role>_<name>_total``) and logged at most once per cause per ``LOG_INTERVAL``, the
next line saying how many were suppressed in between. The QUIC libraries' own logger
("quic": aioquic warns once per failed handshake) gets the same limit
(:func:`limit_library_log`).
"""

from __future__ import annotations

import collections
import logging
import re
import time
from typing import Any

from connet_core.model import HostPort

logger = logging.getLogger("connet.quic")

LOG_INTERVAL = 10.0  # seconds: at most one line per cause this often
# The events counted (exported as connet_<role>_<name>_total; docs/status.md lists them)
COUNTERS = (
    "quic_retries_sent",  # Retry packets: address validation asked of a new client under load
    "quic_handshakes_failed",  # accepted handshakes that failed or timed out
    "quic_dropped_bad_token",  # Initials with a Retry token we did not issue, or expired
    "quic_dropped_pending_full",  # validated Initials over the pending-handshake caps
    "quic_dropped_host_rate",  # validated Initials over their host's budget
    "quic_dropped_validated_rate",  # validated Initials over the budget of all hosts together
    "quic_dropped_retry_rate",  # Initials that would have had a Retry over its budget
    "quic_dropped_small_initial",  # Initials in datagrams smaller than 1200 bytes
    "quic_dropped_not_quic",  # datagrams without a QUIC header
    "quic_dropped_unroutable",  # datagrams for no connection, not answered with a reset
    "quic_resets_sent",  # stateless resets sent
    "quic_version_negotiations_sent",
)
# causes that say the endpoint is attacked or overloaded (a warning); the others also
# happen without anybody meaning harm (a late packet of a forgotten connection, a port
# scanner) and are debug lines: the counters show them either way
_OVERLOAD = frozenset({"bad_token", "pending_full", "host_rate", "validated_rate", "retry_rate"})
_DETAIL = {
    "bad_token": "an Initial with a Retry token we did not issue or that expired",
    "pending_full": "a validated Initial while the pending handshakes are at their cap",
    "host_rate": "a validated Initial over its host's budget of new handshakes",
    "validated_rate": "a validated Initial over the budget of new handshakes of all hosts together",
    "retry_rate": "an Initial that would have been asked for a Retry over the Retry budget",
    "small_initial": "an Initial in a datagram under 1200 bytes",
    "not_quic": "not a QUIC packet",
}


class CauseLog:
    """At most one log line per cause per ``interval`` seconds; the next line says how many
    were suppressed in between. Remembers at most ``max_causes`` causes."""

    def __init__(self, interval: float = LOG_INTERVAL, max_causes: int = 256) -> None:
        self.interval = interval
        self._max_causes = max_causes
        self._causes: collections.OrderedDict[Any, list[float]] = collections.OrderedDict()  # [last, suppressed]

    def note(self, cause: Any, now: float) -> int | None:
        """None: suppress this one. Else log it, with the returned count of suppressed ones."""
        entry = self._causes.get(cause)
        if entry is None:
            self._causes[cause] = [now, 0]
            if len(self._causes) > self._max_causes:
                self._causes.popitem(last=False)
            return 0
        self._causes.move_to_end(cause)
        if now - entry[0] >= self.interval:
            suppressed = int(entry[1])
            entry[0], entry[1] = now, 0
            return suppressed
        entry[1] += 1
        return None


def _suppressed(count: int) -> str:
    return f" ({count} more suppressed in the last {LOG_INTERVAL:.0f} s)" if count else ""


class Refusals:
    """One endpoint's counters and its rate-limited lines about them."""

    def __init__(self, where: Any) -> None:
        self._where = where  # how the lines name the endpoint (its local address, once bound)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._log = CauseLog()

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def dropped(self, cause: str, addr: tuple[str, int], now: float, detail: str = "") -> None:
        """A datagram dropped for ``cause`` (a COUNTERS name after ``quic_dropped_``)."""
        self.counters["quic_dropped_" + cause] += 1
        suppressed = self._log.note(("dropped", cause, detail), now)
        if suppressed is not None:
            logger.log(logging.WARNING if cause in _OVERLOAD else logging.DEBUG,
                       "QUIC %s: dropped a datagram from %s: %s%s", self._where(), HostPort(*addr),
                       detail or _DETAIL.get(cause, cause), _suppressed(suppressed))

    def retried(self, cause: str, addr: tuple[str, int], now: float) -> None:
        """A Retry sent to a new client because of ``cause`` (connet_quic.admission)."""
        self.counters["quic_retries_sent"] += 1
        suppressed = self._log.note(("retry", cause), now)
        if suppressed is not None:
            logger.warning("QUIC %s under load (%s): new clients are asked to prove their address (Retry), "
                           "first %s%s", self._where(), cause.replace("_", " "), HostPort(*addr), _suppressed(suppressed))


_LIBRARY_CONNECTION_PREFIX = re.compile(r"^\[[0-9a-fA-F]*\] ")


class _LibraryLogLimit(logging.Filter):
    """On the libraries' logger: each message (the connection ID prefix stripped) at most
    once per LOG_INTERVAL. A message with arguments counts by its template, so a peer that
    varies what it sends (qh3 logs a peer's close reason) cannot make each line new. Debug
    lines pass: whoever asked for them asked for all."""

    def __init__(self) -> None:
        super().__init__()
        self._log = CauseLog()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        text = record.getMessage()
        kind = str(record.msg) if record.args else text
        # the process's clock, not a loop's: the filter outlives the loop it was made in
        suppressed = self._log.note(_LIBRARY_CONNECTION_PREFIX.sub("", kind)[:200], time.monotonic())
        if suppressed is None:
            return False
        if suppressed:
            record.msg, record.args = text + _suppressed(suppressed), None
        return True


def limit_library_log() -> None:
    """Put the limit on the "quic" logger once per process."""
    library = logging.getLogger("quic")
    if not any(isinstance(f, _LibraryLogLimit) for f in library.filters):
        library.addFilter(_LibraryLogLimit())

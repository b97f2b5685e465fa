"""The UDP tunnels' bookkeeping, sans-I/O (``now`` passed in): a source's flow table (one
flow per remote sender, capped, expired when idle), the per-name counters status and
metrics report, and the rate limit of the drop log lines."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Generic, Hashable, TypeVar

# why a datagram was dropped (status "drops", metric label "cause")
DROP_CAUSES = (
    "too_large",  # larger than the path's DATAGRAM frames carry (docs/udp.md)
    "flows_full",  # a new sender while the source has udp-max-flows flows
    "no_path",  # the flow found no destination, route or path (or was refused)
    "queue_full",  # the flow's first datagrams, while its path was being opened, over the queue
    "not_authentic",  # relayed, and did not authenticate end to end
    "path_closed",  # the flow's connection closed under it
    "send_failed",  # the local socket refused it (the service or sender unreachable)
)

LOG_INTERVAL = 10.0  # at most one drop line per name and cause this often


@dataclass(slots=True)
class UdpCounters:
    """One UDP source's or destination's traffic. "to tunnel" is what its local socket
    received and sent into the tunnel; "from tunnel" what came out of it."""

    flows_active: int = 0
    flows_total: int = 0
    datagrams_to_tunnel: int = 0
    datagrams_from_tunnel: int = 0
    bytes_to_tunnel: int = 0
    bytes_from_tunnel: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_CAUSES, 0))

    def report(self) -> dict[str, object]:
        return {
            "flows": self.flows_active,
            "flows_total": self.flows_total,
            "datagrams_to_tunnel": self.datagrams_to_tunnel,
            "datagrams_from_tunnel": self.datagrams_from_tunnel,
            "bytes_to_tunnel": self.bytes_to_tunnel,
            "bytes_from_tunnel": self.bytes_from_tunnel,
            "drops": dict(self.drops),
        }


class DropLog:
    """Whether a drop deserves a log line now: the first per cause, then one per
    LOG_INTERVAL, saying how many were not logged in between."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def note(self, cause: str, now: float) -> int | None:
        """None: no line. Else log one, with this many drops left unlogged since the last."""
        last = self._last.get(cause)
        if last is None or now - last[0] >= self._interval:
            self._last[cause] = (now, 0)
            return last[1] if last is not None else 0
        self._last[cause] = (last[0], last[1] + 1)
        return None


A = TypeVar("A", bound=Hashable)
F = TypeVar("F")


class FlowTable(Generic[A, F]):
    """A source's flows by sender address, least recently active first."""

    def __init__(self, max_flows: int, idle_timeout: float) -> None:
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self._flows: collections.OrderedDict[A, tuple[F, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    def get(self, sender: A, now: float) -> F | None:
        """The sender's flow, now active again, or None."""
        entry = self._flows.get(sender)
        if entry is None:
            return None
        self._flows[sender] = (entry[0], now)
        self._flows.move_to_end(sender)
        return entry[0]

    def touch(self, sender: A, now: float) -> None:
        """Traffic the other way keeps a flow too (a reply is activity)."""
        self.get(sender, now)

    def add(self, sender: A, flow: F, now: float) -> bool:
        """False, and nothing added, when the table is full."""
        if len(self._flows) >= self.max_flows:
            return False
        self._flows[sender] = (flow, now)
        return True

    def remove(self, sender: A, flow: F) -> None:
        entry = self._flows.get(sender)
        if entry is not None and entry[0] is flow:
            del self._flows[sender]

    def expire(self, now: float) -> list[F]:
        """The flows idle for idle_timeout, removed."""
        expired = []
        while self._flows:
            sender, (flow, at) = next(iter(self._flows.items()))
            if now - at < self.idle_timeout:
                break
            del self._flows[sender]
            expired.append(flow)
        return expired

    def next_expiry(self) -> float | None:
        """When the least recently active flow expires, or None without flows."""
        if not self._flows:
            return None
        _, at = next(iter(self._flows.values()))
        return at + self.idle_timeout

    def flows(self) -> list[F]:
        return [flow for flow, _ in self._flows.values()]

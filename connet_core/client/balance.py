"""Load balancing of a source's new connections over the destinations announcing its name.

Sans-I/O: the source asks :meth:`Balancer.order` for the destinations (peers) to try, in
order, and a :class:`Budget` says whether one more may be tried (``now`` passed in). The
policies and retries are the original connet's (``lb-policy``, ``lb-retry``,
``lb-retry-max``):

- no policy (the default): every destination, in the order the route plugin gave its paths
  (direct before relay, then by round-trip time), each tried until one accepts;
- ``least-latency``: by the round-trip time of the destination's best path, destinations
  reached only through a relay last;
- ``least-conns``: fewest connections this source has open to it first, then by latency;
- ``round-robin``: the destinations sorted by identity, starting one further each time;
- ``random``: a new shuffle each time.

A destination that refused or timed out goes last in every order for FAILED_COOLDOWN
seconds (whatever the policy), so a dead one costs one slow try per cooldown rather than one
per connection while control still lists it (endpoint expiry keeps it for 30 s).

With a policy, ``lb-retry`` defaults to ``never`` (only the first destination is tried);
``count`` tries ``lb-retry-max`` destinations (default 2), ``timed`` starts tries for
``lb-retry-max`` milliseconds (default 1000), ``all`` tries every one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

POLICIES = ("least-latency", "least-conns", "round-robin", "random")
RETRIES = ("never", "count", "timed", "all")
DEFAULT_RETRY_COUNT = 2
DEFAULT_RETRY_MILLISECONDS = 1000
FAILED_COOLDOWN = 5.0  # seconds a destination that failed a connection is tried last


@dataclass(frozen=True, slots=True)
class Choice:
    """One destination as the source sees it now: its identity and its best path."""

    peer: bytes  # sha256 of the destination's certificate
    rtt: float | None  # of its best path; None: not measured yet
    direct: bool  # whether its best path is a direct connection


def _latency_key(choice: Choice) -> tuple[bool, bool, float]:
    return (not choice.direct, choice.rtt is None, choice.rtt or 0.0)


class Budget:
    """How many destinations one connection may still try, and until when."""

    def __init__(self, limit: int | None, deadline: float | None) -> None:
        self._left = limit  # None: no limit by count
        self._deadline = deadline  # None: no limit by time

    def may_try(self, now: float) -> bool:
        if self._left is not None and self._left <= 0:
            return False
        return self._deadline is None or now < self._deadline

    def is_last(self) -> bool:
        """Whether the try about to start is the last the count allows."""
        return self._left == 1

    def tried(self) -> None:
        if self._left is not None:
            self._left -= 1


class Balancer:
    """The policy of one source and what it needs to remember (its connections per
    destination, its round-robin position)."""

    def __init__(self, policy: str = "", retry: str = "", retry_max: int = 0, rng: random.Random | None = None) -> None:
        policy = "" if policy == "none" else policy
        if policy and policy not in POLICIES:
            raise ValueError(f"unknown lb-policy {policy!r}")
        if retry and retry not in RETRIES:
            raise ValueError(f"unknown lb-retry {retry!r}")
        self.policy = policy
        # without a policy every destination is tried, as before load balancing existed
        self.retry = retry or ("never" if policy else "all")
        self.retry_max = retry_max
        self._rng = rng or random.Random()
        self._next = 0  # round-robin position
        self.open: dict[bytes, int] = {}  # connections open per destination (least-conns)
        self._cooling: dict[bytes, float] = {}  # destination -> until when it is tried last

    def budget(self, now: float) -> Budget:
        if self.retry == "never":
            return Budget(1, None)
        if self.retry == "count":
            return Budget(self.retry_max or DEFAULT_RETRY_COUNT, None)
        if self.retry == "timed":
            return Budget(None, now + (self.retry_max or DEFAULT_RETRY_MILLISECONDS) / 1000)
        return Budget(None, None)

    def order(self, choices: Sequence[Choice], now: float = 0.0) -> list[bytes]:
        """The destinations to try for one new connection, first choice first. ``choices``
        come in the route plugin's order, which is kept without a policy; destinations
        that failed within FAILED_COOLDOWN go last."""
        if not choices:
            return []
        self._cooling = {peer: until for peer, until in self._cooling.items() if until > now}
        live = [c for c in choices if c.peer not in self._cooling]
        if not live:
            return [c.peer for c in self._by_policy(choices)]
        # the policy runs over the live ones only, so round-robin stays fair among them
        return [c.peer for c in self._by_policy(live)] + [c.peer for c in choices if c.peer in self._cooling]

    def _by_policy(self, choices: Sequence[Choice]) -> list[Choice]:
        if self.policy == "least-latency":
            ordered = sorted(choices, key=_latency_key)
        elif self.policy == "least-conns":
            ordered = sorted(choices, key=lambda c: (self.open.get(c.peer, 0), *_latency_key(c)))
        elif self.policy == "round-robin":
            ring = sorted(choices, key=lambda c: c.peer)
            start = self._next % len(ring)
            self._next = start + 1
            ordered = ring[start:] + ring[:start]
        elif self.policy == "random":
            ordered = list(choices)
            self._rng.shuffle(ordered)
        else:
            ordered = list(choices)
        return ordered

    def failed(self, peer: bytes, now: float) -> None:
        """``peer`` refused a connection or did not answer in time."""
        self._cooling[peer] = now + FAILED_COOLDOWN

    def opened(self, peer: bytes) -> None:
        self.open[peer] = self.open.get(peer, 0) + 1

    def closed(self, peer: bytes) -> None:
        left = self.open.get(peer, 0) - 1
        if left > 0:
            self.open[peer] = left
        else:
            self.open.pop(peer, None)

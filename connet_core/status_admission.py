"""Which status-endpoint connections may stay (sans-I/O): bounded per address and overall.

A status connection costs a socket and a task until its request head arrives, so a client
that opens connections and sends nothing (or a byte at a time: slowloris) could hold every
slot and starve the dashboards. :class:`Admission` keeps two bounds:

- **per address**: at most ``per_address`` connections from one IP. A new one beyond that
  evicts that address's oldest connection still waiting for its head: an address crowds out
  only itself, and a real client behind the same address, whose head arrives at once, is
  answered before the churn reaches it.
- **overall**: at most ``total``. A new one beyond that evicts the oldest connection still
  waiting for its head, whichever address it is from.

Connections that have their head (being answered) are never evicted; when every slot is such
a connection, the new one is refused. The caller aborts what :meth:`Admission.admit` names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable

__all__ = ["Admission"]


@dataclass
class Admission:
    total: int
    per_address: int
    # key -> [address, head complete]; insertion order is age: the first is the oldest
    _open: dict[Hashable, list] = field(default_factory=dict)
    _per_address: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, key: Hashable, address: str) -> tuple[bool, list[Hashable]]:
        """Whether the new connection ``key`` from ``address`` is taken, and the connections
        to abort to make room (already forgotten here)."""
        evicted: list[Hashable] = []
        if self._per_address[address] >= self.per_address:
            victim = self._oldest_waiting(address)
            if victim is None:
                return False, evicted
            evicted.append(victim)
            self.release(victim)
        if len(self._open) >= self.total:
            victim = self._oldest_waiting(None)
            if victim is None:
                return False, evicted
            evicted.append(victim)
            self.release(victim)
        self._open[key] = [address, False]
        self._per_address[address] += 1
        return True, evicted

    def head_received(self, key: Hashable) -> None:
        """``key`` sent its whole request head: it is being answered, never evicted now."""
        entry = self._open.get(key)
        if entry is not None:
            entry[1] = True

    def release(self, key: Hashable) -> None:
        """``key`` is gone (answered, dropped or evicted); unknown keys are ignored."""
        entry = self._open.pop(key, None)
        if entry is not None:
            self._per_address[entry[0]] -= 1
            if not self._per_address[entry[0]]:
                del self._per_address[entry[0]]

    def _oldest_waiting(self, address: str | None) -> Hashable | None:
        for key, (where, has_head) in self._open.items():
            if not has_head and (address is None or where == address):
                return key
        return None

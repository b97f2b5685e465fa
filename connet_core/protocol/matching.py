"""Sans-I/O matching of destinations and sources by name, as the control server does it.

The control engine feeds announcements, withdrawals and vanished sessions in; the matcher
answers with the pushes to make: ``(session_id, PeersUpdate)`` pairs. A PeersUpdate always
carries the full current set, so a client never needs an earlier one to make sense of it.

Endpoint expiry: with ``expiry`` > 0, a vanished session's announcements stay for that many
seconds (nobody is told); the same certificate announcing the same name and role from a new
session within them takes the old one's place, and its peers hear of no change at all.
``expire(now)`` drops what outlived it and says so to the peers. ``take_released()`` says
which lingering announcements left (expired, or taken over by which session), for control
instances that publish their announcements elsewhere (connet_core/control_instances.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from connet_core.model import Role
from connet_core.protocol.messages import PeerInfo, PeersUpdate

Key = tuple[str, Role]
Push = tuple[int, PeersUpdate]


@dataclass(frozen=True, slots=True)
class Announcement:
    session: int
    name: str
    role: Role
    route: str
    certificate: bytes
    addresses: tuple[str, ...]
    nat: str = ""

    def peer_info(self) -> PeerInfo:
        return PeerInfo(certificate=self.certificate, addresses=self.addresses, route=self.route, nat=self.nat)


class Matcher:
    def __init__(self, expiry: float = 0.0) -> None:
        self._by_key: dict[Key, dict[int, Announcement]] = {}
        self._by_session: dict[int, set[Key]] = {}
        self.expiry = expiry  # seconds a vanished session's announcements stay; 0: none
        self._lingering: dict[int, float] = {}  # vanished session -> when its announcements go
        # lingering announcements that left: (session, key, the session that took over or None)
        self._released: list[tuple[int, Key, int | None]] = []

    def view(self, name: str, role: Role) -> PeersUpdate:
        """What a session announcing (name, role) should know: every peer of the other role."""
        others = self._by_key.get((name, role.opposite()), {})
        return PeersUpdate(name=name, role=role.value, peers=tuple(a.peer_info() for a in others.values()))

    def _fan_out(self, name: str, changed_role: Role) -> list[Push]:
        """Tell every session holding the opposite role of ``name`` the new set."""
        watchers = self._by_key.get((name, changed_role.opposite()), {})
        update = self.view(name, changed_role.opposite())
        return [(session, update) for session in watchers]

    def _take_over(self, ann: Announcement, entries: dict[int, Announcement]) -> Announcement | None:
        """The lingering announcement of the same certificate for this key, removed: the
        client came back within the expiry."""
        for session in list(entries):
            old = entries[session]
            if session in self._lingering and session != ann.session and old.certificate == ann.certificate:
                del entries[session]
                self._released.append((session, (ann.name, ann.role), ann.session))
                held = self._by_session.get(session, set())
                held.discard((ann.name, ann.role))
                if not held:
                    self._by_session.pop(session, None)
                    self._lingering.pop(session, None)
                return old
        return None

    def announce(self, ann: Announcement) -> list[Push]:
        key = (ann.name, ann.role)
        entries = self._by_key.setdefault(key, {})
        previous = entries.get(ann.session)
        if previous is None and self._lingering:
            replaced = self._take_over(ann, entries)
            if replaced is not None and replaced.peer_info() == ann.peer_info():
                previous = ann  # the same peer as before: nobody needs telling
        entries[ann.session] = ann
        self._by_session.setdefault(ann.session, set()).add(key)
        pushes: list[Push] = [(ann.session, self.view(ann.name, ann.role))]
        if previous != ann:
            pushes.extend(self._fan_out(ann.name, ann.role))
        return pushes

    def withdraw(self, session: int, name: str, role: Role) -> list[Push]:
        key = (name, role)
        entries = self._by_key.get(key)
        if not entries or session not in entries:
            return []
        del entries[session]
        if not entries:
            del self._by_key[key]
        self._by_session.get(session, set()).discard(key)
        return self._fan_out(name, role)

    def drop_session(self, session: int, now: float | None = None) -> list[Push]:
        """The session is gone. With an expiry (and ``now``), its announcements linger
        until ``expire`` drops them; without, they go at once and the peers are told."""
        if self.expiry > 0 and now is not None and session in self._by_session:
            self._lingering[session] = now + self.expiry
            return []
        self._lingering.pop(session, None)
        # every announcement of the session goes before anyone is told: a session holding
        # both roles of a name must not be told, while it vanishes, about its own other half
        # (found by tests/property/test_stateful_protocol.py)
        held = sorted(self._by_session.pop(session, set()))
        for name, role in held:
            entries = self._by_key.get((name, role), {})
            entries.pop(session, None)
            if not entries:
                self._by_key.pop((name, role), None)
        pushes: list[Push] = []
        for name, role in held:
            pushes.extend(self._fan_out(name, role))
        return pushes

    def expire(self, now: float) -> list[Push]:
        """Drop the announcements of vanished sessions whose expiry passed; tell their peers."""
        pushes: list[Push] = []
        for session, deadline in sorted(self._lingering.items()):
            if deadline <= now:
                self._released.extend((session, key, None) for key in sorted(self._by_session.get(session, ())))
                pushes.extend(self.drop_session(session))
        return pushes

    def is_lingering(self, session: int) -> bool:
        return session in self._lingering

    def take_released(self) -> list[tuple[int, Key, int | None]]:
        """The lingering announcements that left since the last call: (vanished session,
        (name, role), the session that took its place, or None when it expired)."""
        released, self._released = self._released, []
        return released

    def lingering(self) -> int:
        """For status: announcements kept for vanished sessions."""
        return sum(len(self._by_session.get(session, ())) for session in self._lingering)

    def names(self) -> dict[str, dict[str, int]]:
        """For status: name -> role -> number of announcements."""
        out: dict[str, dict[str, int]] = {}
        for (name, role), entries in self._by_key.items():
            out.setdefault(name, {})[role.value] = len(entries)
        return out

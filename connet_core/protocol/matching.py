"""Sans-I/O matching of destinations and sources by name, as the control server does it.

The control engine feeds announcements, withdrawals and vanished sessions in; the matcher
answers with the pushes to make: ``(session_id, PeersUpdate)`` pairs. A PeersUpdate always
carries the full current set, so a client never needs an earlier one to make sense of it.
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
    def __init__(self) -> None:
        self._by_key: dict[Key, dict[int, Announcement]] = {}
        self._by_session: dict[int, set[Key]] = {}

    def view(self, name: str, role: Role) -> PeersUpdate:
        """What a session announcing (name, role) should know: every peer of the other role."""
        others = self._by_key.get((name, role.opposite()), {})
        return PeersUpdate(name=name, role=role.value, peers=tuple(a.peer_info() for a in others.values()))

    def _fan_out(self, name: str, changed_role: Role) -> list[Push]:
        """Tell every session holding the opposite role of ``name`` the new set."""
        watchers = self._by_key.get((name, changed_role.opposite()), {})
        update = self.view(name, changed_role.opposite())
        return [(session, update) for session in watchers]

    def announce(self, ann: Announcement) -> list[Push]:
        key = (ann.name, ann.role)
        entries = self._by_key.setdefault(key, {})
        previous = entries.get(ann.session)
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

    def drop_session(self, session: int) -> list[Push]:
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

    def names(self) -> dict[str, dict[str, int]]:
        """For status: name -> role -> number of announcements."""
        out: dict[str, dict[str, int]] = {}
        for (name, role), entries in self._by_key.items():
            out.setdefault(name, {})[role.value] = len(entries)
        return out

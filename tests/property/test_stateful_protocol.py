"""Stateful property tests (hypothesis RuleBasedStateMachine) of the protocol's state.

- The Matcher: clients announce, re-announce, withdraw, reconnect (a new session with the
  same announcements) and vanish; what each client was last told for each of its
  announcements always equals a simple reference model, and nobody is told about a name
  they do not hold.
- Relay grants: issued, checked, expired and tampered with, against a model of which grants
  are valid at the current time. (The identity proof has its own: test_identity_proof.py.)
"""

from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from connet_core.model import Role
from connet_core.protocol.grants import Grant, check_grant, issue_grant, relay_grant_key
from connet_core.protocol.matching import Announcement, Matcher, Push

NAMES = st.sampled_from(["web", "db", "ssh"])
ROLES = st.sampled_from([Role.DESTINATION, Role.SOURCE])
ADDRS = st.lists(st.sampled_from(["10.0.0.1:1", "192.0.2.7:9", "[2001:db8::1]:5"]), max_size=2).map(tuple)


class MatcherMachine(RuleBasedStateMachine):
    """Clients are numbered; each live client has one session id at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.matcher = Matcher()
        self.next_session = 1
        self.session_of: dict[int, int] = {}  # client -> its live session
        # the reference model: (name, role) -> {session: Announcement}
        self.model: dict[tuple[str, Role], dict[int, Announcement]] = {}
        # what each session was last told, per (name, role) it holds
        self.told: dict[tuple[int, str, Role], frozenset] = {}

    def _deliver(self, pushes: list[Push]) -> None:
        for session, update in pushes:
            key = (update.name, Role(update.role))
            # only a session holding that announcement is told about it
            assert session in self.model.get(key, {}), f"session {session} told about {key} it does not hold"
            self.told[(session, *key)] = frozenset(
                (p.certificate, p.addresses, p.route) for p in update.peers)

    def _expected(self, name: str, role: Role) -> frozenset:
        others = self.model.get((name, role.opposite()), {})
        return frozenset((a.certificate, a.addresses, a.route) for a in others.values())

    def _announce(self, session: int, client: int, name: str, role: Role, addrs: tuple, route: str) -> None:
        ann = Announcement(session, name, role, route, hashlib.sha256(b"%d" % client).digest(), addrs)
        self.model.setdefault((name, role), {})[session] = ann
        self._deliver(self.matcher.announce(ann))

    @rule(client=st.integers(0, 4))
    @precondition(lambda self: len(self.session_of) < 5)
    def connect(self, client: int) -> None:
        if client not in self.session_of:
            self.session_of[client] = self.next_session
            self.next_session += 1

    @rule(client=st.integers(0, 4), name=NAMES, role=ROLES, addrs=ADDRS,
          route=st.sampled_from(["any", "direct", "relay"]))
    def announce(self, client: int, name: str, role: Role, addrs: tuple, route: str) -> None:
        if client in self.session_of:  # a new or a changed announcement (re-announce)
            self._announce(self.session_of[client], client, name, role, addrs, route)

    @rule(client=st.integers(0, 4), name=NAMES, role=ROLES)
    def withdraw(self, client: int, name: str, role: Role) -> None:
        session = self.session_of.get(client)
        if session is None:
            return
        self.model.get((name, role), {}).pop(session, None)
        self.told.pop((session, name, role), None)
        self._deliver(self.matcher.withdraw(session, name, role))

    @rule(client=st.integers(0, 4))
    def vanish(self, client: int) -> None:
        session = self.session_of.pop(client, None)
        if session is None:
            return
        held = [key for key, entries in self.model.items() if session in entries]
        for key in held:
            del self.model[key][session]
            self.told.pop((session, *key), None)
        self._deliver(self.matcher.drop_session(session))

    @rule(client=st.integers(0, 4))
    def reconnect(self, client: int) -> None:
        """The old session vanishes; a new one announces the same names again."""
        session = self.session_of.get(client)
        if session is None:
            return
        held = [(key, entries[session]) for key, entries in self.model.items() if session in entries]
        self.vanish(client)
        self.connect(client)
        for (name, role), ann in held:
            self._announce(self.session_of[client], client, name, role, ann.addresses, ann.route)

    @invariant()
    def every_client_knows_exactly_the_current_peers(self) -> None:
        for (name, role), entries in self.model.items():
            for session in entries:
                assert self.told.get((session, name, role)) == self._expected(name, role), (session, name, role)

    @invariant()
    def the_status_counts_match_the_model(self) -> None:
        expected: dict[str, dict[str, int]] = {}
        for (name, role), entries in self.model.items():
            if entries:
                expected.setdefault(name, {})[role.value] = len(entries)
        assert self.matcher.names() == expected


TestMatcher = MatcherMachine.TestCase
TestMatcher.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                suppress_health_check=[HealthCheck.too_slow])


class GrantMachine(RuleBasedStateMachine):
    """A control secret, relays' keys, grants issued for certificates; time moves forward."""

    grants = Bundle("grants")

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_700_000_000.0
        self.secret = b"s" * 32

    def key(self, relay: int) -> bytes:
        return relay_grant_key(self.secret, hashlib.sha256(b"relay%d" % relay).digest())

    @rule(target=grants, relay=st.integers(0, 2), name=NAMES, role=ROLES, holder=st.integers(0, 3),
          life=st.floats(1, 600))
    def issue(self, relay: int, name: str, role: Role, holder: int, life: float):
        grant = Grant(name, role, hashlib.sha256(b"cert%d" % holder).digest(), self.now + life)
        return (relay, grant, issue_grant(self.key(relay), grant), self.secret)

    @rule(issued=grants, other_relay=st.integers(0, 2), other_holder=st.integers(0, 3))
    def check(self, issued, other_relay: int, other_holder: int) -> None:
        relay, grant, data, secret = issued
        cert = hashlib.sha256(b"cert%d" % other_holder).digest()
        valid = (other_relay == relay and cert == grant.cert_hash and grant.expires_at >= self.now
                 and secret == self.secret)
        assert (check_grant(self.key(other_relay), data, cert, self.now) == grant) is valid
        assert check_grant(self.key(other_relay), data, cert, self.now) in (None, grant)

    @rule(issued=consumes(grants), position=st.integers(0, 10_000), flip=st.integers(1, 255))
    def tamper(self, issued, position: int, flip: int) -> None:
        relay, grant, data, _ = issued
        changed = bytearray(data)
        changed[position % len(changed)] ^= flip
        assert check_grant(self.key(relay), bytes(changed), grant.cert_hash, self.now) is None

    @rule(issued=grants, cut=st.integers(1, 40))
    def truncate(self, issued, cut: int) -> None:
        relay, grant, data, _ = issued
        assert check_grant(self.key(relay), data[:-cut], grant.cert_hash, self.now) is None

    @rule(seconds=st.floats(0, 300))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(secret=st.binary(min_size=32, max_size=32))
    def control_forgets_its_secret(self, secret: bytes) -> None:
        """A new control secret (a store lost): every grant issued before stops checking."""
        self.secret = secret


TestGrants = GrantMachine.TestCase
TestGrants.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)

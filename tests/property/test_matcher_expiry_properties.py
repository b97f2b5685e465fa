"""Endpoint expiry in the Matcher, against the Matcher without it: whatever the sequence of
announcements, vanished sessions and reconnects, once every expiry passed both show the
same peers; before that, every peer the plain Matcher shows is shown too (expiry only ever
keeps, never loses). tests/unit/test_matcher_expiry.py has the reconnect that is no news."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connet_core.model import Role
from connet_core.protocol.matching import Announcement, Matcher

CERTS = [b"c0", b"c1", b"c2"]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("announce"), st.integers(0, 5), st.sampled_from(["a", "b"]),
                  st.sampled_from(list(Role)), st.integers(0, 2)),
        st.tuples(st.just("drop"), st.integers(0, 5)),
        st.tuples(st.just("tick"), st.floats(0, 20)),
    ),
    max_size=40,
)


def certs(matcher: Matcher, name: str, role: Role) -> set[bytes]:
    return {p.certificate for p in matcher.view(name, role.opposite()).peers}


@settings(max_examples=300, deadline=None)
@given(ops)
def test_expiry_only_keeps_and_converges(sequence: list[tuple]) -> None:
    plain, kept = Matcher(), Matcher(expiry=10.0)
    now = 0.0
    live: set[int] = set()
    generation = {s: 0 for s in range(6)}  # a dropped session comes back under a new id

    def sid(slot: int) -> int:
        return slot * 1000 + generation[slot]

    for op in sequence:
        if op[0] == "announce":
            _, slot, name, role, cert = op
            ann = Announcement(sid(slot), name, role, "any", CERTS[cert], ())
            plain.announce(ann)
            kept.announce(ann)
            live.add(slot)
        elif op[0] == "drop":
            slot = op[1]
            plain.drop_session(sid(slot), now)
            kept.drop_session(sid(slot), now)
            generation[slot] += 1
            live.discard(slot)
        else:
            now += op[1]
            plain.expire(now)
            kept.expire(now)
        for name in ("a", "b"):
            for role in Role:
                assert certs(plain, name, role) <= certs(kept, name, role)
    kept.expire(now + 10.0)
    for name in ("a", "b"):
        for role in Role:
            assert certs(plain, name, role) == certs(kept, name, role)
    assert kept.lingering() == 0

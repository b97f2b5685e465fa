"""Endpoint expiry in the Matcher: a vanished session's announcements stay for the expiry; a
reconnect of the same certificate within it changes nothing for the peers; after it, the
peers are told."""

from __future__ import annotations

from connet_core.model import Role
from connet_core.protocol.matching import Announcement, Matcher

DST_CERT, SRC_CERT = b"dst-cert", b"src-cert"


def dst(session: int, cert: bytes = DST_CERT, addresses: tuple[str, ...] = ("10.0.0.1:5000",)) -> Announcement:
    return Announcement(session, "web", Role.DESTINATION, "any", cert, addresses)


def src(session: int) -> Announcement:
    return Announcement(session, "web", Role.SOURCE, "any", SRC_CERT, ())


def told_source(pushes: list, source_session: int = 1) -> list:
    return [update for session, update in pushes if session == source_session]


def test_a_reconnect_within_the_expiry_is_not_news() -> None:
    m = Matcher(expiry=30.0)
    m.announce(src(1))
    assert told_source(m.announce(dst(2)))[0].peers[0].certificate == DST_CERT
    assert m.drop_session(2, now=100.0) == []  # the destination's session vanished: nobody told
    assert m.lingering() == 1
    assert m.view("web", Role.SOURCE).peers[0].certificate == DST_CERT
    pushes = m.announce(dst(3))  # the same client, a new session
    assert told_source(pushes) == []  # the source hears nothing
    assert [s for s, _ in pushes] == [3]  # only the new session gets its view
    assert m.lingering() == 0
    assert m.expire(now=1000.0) == []  # nothing left to expire
    assert len(m.view("web", Role.SOURCE).peers) == 1


def test_after_the_expiry_the_peers_are_told() -> None:
    m = Matcher(expiry=30.0)
    m.announce(src(1))
    m.announce(dst(2))
    m.drop_session(2, now=100.0)
    assert m.expire(now=129.9) == []
    updates = told_source(m.expire(now=130.0))
    assert len(updates) == 1 and updates[0].peers == ()
    assert m.names() == {"web": {"source": 1}}


def test_another_certificate_does_not_take_over() -> None:
    m = Matcher(expiry=30.0)
    m.announce(src(1))
    m.announce(dst(2))
    m.drop_session(2, now=0.0)
    updates = told_source(m.announce(dst(3, cert=b"other")))  # a restarted client: a new identity
    assert {p.certificate for p in updates[0].peers} == {DST_CERT, b"other"}
    updates = told_source(m.expire(now=30.0))
    assert [p.certificate for p in updates[0].peers] == [b"other"]


def test_a_reconnect_with_new_addresses_is_told() -> None:
    m = Matcher(expiry=30.0)
    m.announce(src(1))
    m.announce(dst(2))
    m.drop_session(2, now=0.0)
    updates = told_source(m.announce(dst(3, addresses=("10.0.0.1:6000",))))
    assert [p.addresses for p in updates[0].peers] == [("10.0.0.1:6000",)]


def test_disabled_drops_at_once() -> None:
    m = Matcher(expiry=0.0)
    m.announce(src(1))
    m.announce(dst(2))
    updates = told_source(m.drop_session(2, now=5.0))
    assert updates[0].peers == ()

"""Who plays which side of birthday probing, from what each client says of its NAT, and how
that word travels (Announce -> control's matcher -> PeerInfo)."""

from __future__ import annotations

from connet_core.client.birthday_probe import attempt_id, own_nat, roles
from connet_core.config import ClientSettings
from connet_core.client.state import ClientState
from connet_core.model import HostPort, Role
from connet_core.portmap.mapper import MappedAddress
from connet_core.protocol.codec import decode, encode
from connet_core.protocol.matching import Announcement, Matcher
from connet_core.protocol.messages import Announce, PeerInfo


def test_only_one_hard_and_one_easy_side_probe() -> None:
    assert roles("hard", "easy") == "hard"
    assert roles("easy", "hard") == "easy"
    for own, peer in [("hard", "hard"), ("easy", "easy"), ("", "hard"), ("hard", ""), ("", "")]:
        assert roles(own, peer) is None


def test_own_nat_from_the_port_control_saw_or_a_router_mapping() -> None:
    state = ClientState(ClientSettings(token="t"))
    assert own_nat(state, 19192) == ""  # not yet seen by control
    state.observed = HostPort("203.0.113.20", 19192)
    assert own_nat(state, 19192) == "easy"
    state.observed = HostPort("203.0.113.20", 40111)
    assert own_nat(state, 19192) == "hard"
    state.port_mapping = MappedAddress("pcp", HostPort("203.0.113.20", 19192), 7200, 0.0)
    assert own_nat(state, 19192) == "easy"


def test_both_sides_compute_the_same_attempt_id() -> None:
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert attempt_id(a, b) == attempt_id(b, a) != attempt_id(a, a)


def test_the_nat_word_reaches_the_peer_and_old_peers_still_decode() -> None:
    announce = decode(encode(Announce("web", "destination", "any", b"cert", ("203.0.113.20:19192",), "hard")))
    assert announce.nat == "hard"  # type: ignore[union-attr]
    old = decode(encode(Announce("web", "destination", "any", b"cert")))
    assert old.nat == ""  # type: ignore[union-attr]
    matcher = Matcher()
    matcher.announce(Announcement(1, "web", Role.DESTINATION, "any", b"d", ("203.0.113.20:19192",), "hard"))
    pushes = matcher.announce(Announcement(2, "web", Role.SOURCE, "any", b"s", ("203.0.113.21:19192",), "easy"))
    infos = {p.certificate: p for _, update in pushes for p in update.peers}
    assert infos[b"d"] == PeerInfo(b"d", ("203.0.113.20:19192",), "any", "hard")
    assert infos[b"s"].nat == "easy"

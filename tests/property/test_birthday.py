"""Birthday probing's sans-I/O core (connet_core/protocol/birthday.py): the key only the pair
derives, probes nobody else can forge, the budget, and the meeting odds the issue quotes."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from connet_core.protocol import birthday as bd

EASY_KEY = ec.generate_private_key(ec.SECP256R1())
HARD_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())
ATTEMPT = b"attempt1"


def test_both_sides_derive_one_key_and_a_third_party_cannot() -> None:
    easy = bd.pair_key(EASY_KEY, HARD_KEY.public_key(), ATTEMPT)
    hard = bd.pair_key(HARD_KEY, EASY_KEY.public_key(), ATTEMPT)
    assert easy == hard
    assert bd.pair_key(STRANGER, HARD_KEY.public_key(), ATTEMPT) != easy
    assert bd.pair_key(EASY_KEY, HARD_KEY.public_key(), b"attempt2") != easy


@given(st.binary(max_size=64))
def test_no_forged_or_stray_datagram_verifies(data: bytes) -> None:
    key = bd.pair_key(EASY_KEY, HARD_KEY.public_key(), ATTEMPT)
    assert bd.verify(key, data, bd.EASY, ATTEMPT) is None


@given(st.integers(0, 65535), st.integers(0, bd.SIZE - 1), st.integers(1, 255))
def test_any_flipped_bit_is_refused(sequence: int, position: int, flip: int) -> None:
    key = bd.pair_key(EASY_KEY, HARD_KEY.public_key(), ATTEMPT)
    probe = bytearray(bd.encode(key, bd.EASY, ATTEMPT, sequence))
    assert bd.verify(key, bytes(probe), bd.EASY, ATTEMPT) == sequence
    probe[position] ^= flip
    assert bd.verify(key, bytes(probe), bd.EASY, ATTEMPT) is None


def test_a_probe_is_not_quic_and_small() -> None:
    probe = bd.encode(b"k" * 32, bd.HARD, ATTEMPT, 1)
    assert probe[0] & 0x40 == 0  # QUIC's fixed bit clear: every QUIC stack drops it
    assert len(probe) == bd.SIZE == 32


def test_easy_side_keeps_its_budget_and_pace_and_stops() -> None:
    prober = bd.EasyProber(b"k" * 32, ATTEMPT, "203.0.113.21", started=100.0, rng=random.Random(1))
    first = prober.due(100.0)
    assert len(first) == 1
    assert len(prober.due(101.0)) == int(bd.PROBES_PER_SECOND)  # one second's worth
    everything = first + prober.due(1000.0)
    assert prober.sent == bd.EASY_PROBES and prober.next_time() is None
    assert len(everything) == bd.EASY_PROBES - int(bd.PROBES_PER_SECOND)
    every = first + [p for p in everything]
    assert {ip for ip, _, _ in every} == {"203.0.113.21"}, "probes only to the peer's address"
    assert all(port in bd.PORTS for _, port, _ in every)
    stopped = bd.EasyProber(b"k" * 32, ATTEMPT, "203.0.113.21", started=0.0)
    stopped.due(0.5)
    stopped.stop()
    assert stopped.due(100.0) == [] and stopped.next_time() is None


def test_hard_side_sends_each_socket_twice_at_most_and_takes_only_the_peer() -> None:
    key = bd.pair_key(HARD_KEY, EASY_KEY.public_key(), ATTEMPT)
    peer = ("203.0.113.20", 19192)
    prober = bd.HardProber(key, ATTEMPT, peer, started=0.0)
    assert len(prober.due(0.0)) == bd.HARD_SOCKETS
    assert prober.due(0.5) == []
    assert len(prober.due(1.5)) == bd.HARD_SOCKETS
    assert prober.due(100.0) == []
    genuine = bd.encode(key, bd.EASY, ATTEMPT, 7)
    assert prober.received(3, genuine, ("203.0.113.99", 19192)) is None  # not from the peer
    assert prober.received(3, bd.encode(key, bd.HARD, ATTEMPT, 7), peer) is None  # our own kind
    assert prober.ignored == 2
    assert prober.received(42, genuine, peer) == 42
    assert prober.winner == 42


@pytest.mark.parametrize(("probes", "expected"), [(256, 0.63), (1024, 0.98)])
def test_meeting_odds(probes: int, expected: float) -> None:
    assert bd.meeting_probability(bd.HARD_SOCKETS, probes) == pytest.approx(expected, abs=0.015)


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_meeting_rate_matches_the_odds(seed: int) -> None:
    """A hard NAT's random mappings and the easy side's probe ports, simulated 300 times."""
    rng = random.Random(seed)
    hits = 0
    for _ in range(300):
        mappings = set(rng.sample(bd.PORTS, bd.HARD_SOCKETS))
        prober = bd.EasyProber(b"k" * 32, ATTEMPT, "x", started=0.0, rng=rng)
        hits += any(port in mappings for _, port, _ in prober.due(1e9))
    assert abs(hits / 300 - bd.meeting_probability(bd.HARD_SOCKETS, bd.EASY_PROBES)) < 0.05

"""The source's load balancer (connet_core/client/balance.py): orders and retry budgets."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connet_core.client.balance import Balancer, Choice

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def choices() -> list[Choice]:
    # route order: C first (say, the plugin's choice), B relay-only, A the fastest direct
    return [Choice(C, 0.030, True), Choice(B, 0.001, False), Choice(A, 0.010, True)]


def test_no_policy_keeps_the_route_order_and_tries_everyone() -> None:
    balancer = Balancer()
    assert balancer.order(choices()) == [C, B, A]
    budget = balancer.budget(0.0)
    for _ in range(100):
        assert budget.may_try(0.0)
        budget.tried()


def test_least_latency_puts_relay_only_destinations_last() -> None:
    assert Balancer("least-latency").order(choices()) == [A, C, B]


def test_unmeasured_latency_goes_after_measured() -> None:
    order = Balancer("least-latency").order([Choice(A, None, True), Choice(B, 0.5, True)])
    assert order == [B, A]


def test_least_conns_counts_open_connections_then_latency() -> None:
    balancer = Balancer("least-conns")
    assert balancer.order(choices())[0] == A
    balancer.opened(A)
    assert balancer.order(choices())[0] == C  # A has one open; C is the faster of the idle
    balancer.opened(C)
    balancer.opened(B)
    balancer.closed(A)
    assert balancer.order(choices())[0] == A
    balancer.closed(A)  # more closes than opens cannot go negative
    assert balancer.open.get(A) is None


def test_round_robin_cycles_by_identity() -> None:
    balancer = Balancer("round-robin")
    firsts = [balancer.order(choices())[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]


def test_random_uses_its_generator() -> None:
    balancer = Balancer("random", rng=random.Random(7))
    firsts = Counter(balancer.order(choices())[0] for _ in range(300))
    assert set(firsts) == {A, B, C} and min(firsts.values()) > 60


@pytest.mark.parametrize("policy", ["least-latency", "least-conns", "round-robin", "random"])
def test_a_policy_without_retry_tries_one(policy: str) -> None:
    budget = Balancer(policy).budget(0.0)
    assert budget.may_try(0.0) and budget.is_last()
    budget.tried()
    assert not budget.may_try(0.0)


def test_count_retry() -> None:
    for retry_max, tries in ((0, 2), (3, 3)):
        budget = Balancer("round-robin", "count", retry_max).budget(0.0)
        made = 0
        while budget.may_try(0.0):
            budget.tried()
            made += 1
        assert made == tries


def test_timed_retry_is_milliseconds() -> None:
    budget = Balancer("random", "timed", 250).budget(10.0)
    budget.tried()
    assert budget.may_try(10.249)
    assert not budget.may_try(10.25)
    assert not Balancer("random", "timed").budget(0.0).may_try(1.0)  # default 1000 ms


def test_none_is_the_default_policy_and_bad_names_are_bugs() -> None:
    assert Balancer("none").policy == ""
    with pytest.raises(ValueError):
        Balancer("fastest")
    with pytest.raises(ValueError):
        Balancer("", "sometimes")


peers = st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=8, unique=True)


@given(peers, st.sampled_from(["", "least-latency", "least-conns", "round-robin", "random"]),
       st.lists(st.floats(0, 1) | st.none(), min_size=8, max_size=8), st.integers(0, 2**32))
def test_every_order_is_a_permutation(ids: list[bytes], policy: str, rtts: list[float | None], seed: int) -> None:
    balancer = Balancer(policy, rng=random.Random(seed))
    offered = [Choice(p, rtts[i], i % 2 == 0) for i, p in enumerate(ids)]
    for _ in range(3):
        order = balancer.order(offered)
        assert sorted(order) == sorted(ids)


@given(peers, st.integers(1, 50))
def test_round_robin_is_fair_over_whole_rounds(ids: list[bytes], rounds: int) -> None:
    balancer = Balancer("round-robin")
    offered = [Choice(p, None, True) for p in ids]
    firsts = Counter(balancer.order(offered)[0] for _ in range(rounds * len(ids)))
    assert all(firsts[p] == rounds for p in ids)


@given(peers, st.lists(st.integers(0, 7), max_size=30))
def test_least_conns_first_has_the_fewest(ids: list[bytes], opens: list[int]) -> None:
    balancer = Balancer("least-conns")
    for index in opens:
        balancer.opened(ids[index % len(ids)])
    first = balancer.order([Choice(p, None, True) for p in ids])[0]
    assert balancer.open.get(first, 0) == min(balancer.open.get(p, 0) for p in ids)


def test_a_destination_that_failed_goes_last_for_the_cooldown() -> None:
    from connet_core.client.balance import FAILED_COOLDOWN

    balancer = Balancer("round-robin")
    balancer.failed(A, now=100.0)
    for _ in range(6):  # every rotation: A last
        assert balancer.order(choices(), now=100.0 + FAILED_COOLDOWN - 0.1)[-1] == A
    assert Balancer().order(choices(), now=0.0) == [C, B, A]
    unpolicied = Balancer()
    unpolicied.failed(C, now=0.0)
    assert unpolicied.order(choices(), now=1.0) == [B, A, C]
    assert unpolicied.order(choices(), now=FAILED_COOLDOWN) == [C, B, A]  # the cooldown is over


def test_round_robin_stays_fair_among_the_live_while_one_cools() -> None:
    balancer = Balancer("round-robin")
    balancer.failed(B, now=0.0)
    firsts = Counter(balancer.order(choices(), now=1.0)[0] for _ in range(10))
    assert firsts == Counter({A: 5, C: 5})

"""Invariants of the default route selection (connet_routes)."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from connet_core.model import PathCandidate, PathKind, RoutePolicy
from connet_routes import connet_select_routes, order_routes

rtts = st.one_of(st.none(), st.floats(0, 10, allow_nan=False), st.just(math.nan))
candidates = st.lists(
    st.builds(
        lambda kind, i, rtt: PathCandidate(
            kind=kind, peer=f"peer{i}", relay=f"relay{i}:19191" if kind is PathKind.RELAY else None, rtt=rtt, key=i
        ),
        st.sampled_from(PathKind),
        st.integers(0, 5),
        rtts,
    ),
    max_size=12,
)
policies = st.sampled_from(RoutePolicy)


def _ident(c: PathCandidate) -> tuple:
    return (c.kind, c.peer, c.relay, repr(c.rtt), c.key)


def _measured(c: PathCandidate) -> bool:
    return c.rtt is not None and not math.isnan(c.rtt)


@settings(max_examples=300, deadline=None)
@given(local=policies, remote=policies, paths=candidates)
def test_route_order_invariants(local, remote, paths):
    ordered = connet_select_routes(name="web", local_policy=local, remote_policy=remote, candidates=paths)
    allowed = [c for c in paths if local.allows(c.kind) and remote.allows(c.kind)]
    # a permutation of the allowed subset: nothing lost, nothing invented, nothing forbidden
    assert Counter(map(_ident, ordered)) == Counter(map(_ident, allowed))
    assert all(local.allows(c.kind) and remote.allows(c.kind) for c in ordered)
    kinds = [c.kind for c in ordered]
    if PathKind.RELAY in kinds:
        assert PathKind.DIRECT not in kinds[kinds.index(PathKind.RELAY) :], "a direct path after a relay"
    for kind in PathKind:
        same = [c for c in ordered if c.kind is kind]
        measured_flags = [_measured(c) for c in same]
        assert measured_flags == sorted(measured_flags, reverse=True), "an unmeasured path before a measured one"
        measured = [c.rtt for c in same if _measured(c)]
        assert measured == sorted(measured)


@settings(max_examples=200, deadline=None)
@given(local=policies, remote=policies, paths=candidates)
def test_ties_keep_the_given_order(local, remote, paths):
    ordered = order_routes(local, remote, paths)
    position = {id(c): i for i, c in enumerate(paths)}

    def rank(c):
        return (c.kind is not PathKind.DIRECT, not _measured(c), c.rtt if _measured(c) else 0.0)

    for a, b in zip(ordered, ordered[1:]):
        if rank(a) == rank(b):
            assert position[id(a)] < position[id(b)]


def test_incompatible_policies_leave_nothing():
    paths = [PathCandidate(PathKind.DIRECT, "p", rtt=0.01), PathCandidate(PathKind.RELAY, "p", "r:1", rtt=0.001)]
    assert order_routes(RoutePolicy.DIRECT, RoutePolicy.RELAY, paths) == []
    assert order_routes(RoutePolicy.ANY, RoutePolicy.ANY, paths) == paths
    assert order_routes(RoutePolicy.RELAY, RoutePolicy.ANY, paths) == paths[1:]

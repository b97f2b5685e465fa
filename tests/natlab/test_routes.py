"""Route policies through real NATs: ``direct`` never falls back to the relay, ``relay`` never
goes direct, and a pair with no common route refuses visibly."""

from __future__ import annotations

import pytest

from natlab.checks import MIB, RELAY_QUIET, assert_relayed, transfer
from natlab.lab import Lab, build_pair

pytestmark = [pytest.mark.natlab]

ATTEMPT = 256 * 1024  # enough that any of it going through the relay would show on its port


@pytest.mark.parametrize("direct_end", ["source", "destination"])
def test_route_direct_where_punching_is_impossible_fails_visibly(lab: Lab, direct_end: str) -> None:
    """hard x hard cannot punch (nor meet by birthday probing); with route = "direct" at either
    end the source must refuse (log says no route / no path) and not a byte may touch the relay."""
    routes = {"src_route": "direct"} if direct_end == "source" else {"dst_route": "direct"}
    pair = build_pair(lab, "hard", "hard", **routes)
    source = pair.source.daemon
    source.wait_for(r"peer \S+ matched for source", 15)
    # both ends say why there is no direct path (and do not try birthday probing)
    for client in (pair.source, pair.destination):
        client.daemon.wait_for(r"both NATs map per destination \(hard\): no direct path", 10)
    mark = source.mark()
    before = lab.counters()
    result = lab.send(pair.src_host, ATTEMPT, timeout=30)
    delta = lab.counters() - before
    assert not result["ok"] and result["received"] == 0, f"the connection should have been refused: {result}"
    source.wait_for(r"refusing a connection: no (route|path)", 5, start=mark)
    assert delta.relay < RELAY_QUIET, f"route=direct at the {direct_end} but the relay port saw {delta.relay} bytes"
    assert source.count(r"via relay path", mark) == 0, "the source used a relay path despite route=direct"
    assert source.count(r"connected direct", 0) == 0, "hard x hard went direct: update the grid in docs/natlab.md, pick another pair"


def test_direct_at_one_end_relay_at_the_other_is_no_route(lab: Lab) -> None:
    pair = build_pair(lab, "easy", "easy", src_route="direct", dst_route="relay")
    source = pair.source.daemon
    source.wait_for(r"peer \S+ matched for source", 15)
    mark = source.mark()
    before = lab.counters()
    result = lab.send(pair.src_host, ATTEMPT, timeout=30)
    delta = lab.counters() - before
    assert not result["ok"] and result["received"] == 0, f"the connection should have been refused: {result}"
    source.wait_for(r"refusing a connection: no route", 5, start=mark)
    assert delta.relay < RELAY_QUIET and delta.p2p < RELAY_QUIET, f"bytes moved despite no route: {delta}"


@pytest.mark.parametrize("relay_end", ["source", "destination"])
def test_route_relay_where_direct_is_possible_uses_the_relay(lab: Lab, relay_end: str) -> None:
    routes = {"src_route": "relay"} if relay_end == "source" else {"dst_route": "relay"}
    pair = build_pair(lab, "easy", "easy", **routes)
    pair.wait_relay()
    probe = lab.probe(pair.src_host)
    assert probe["ok"], f"no tunnel through the relay: {probe}"
    delta = transfer(lab, pair.src_host, MIB)
    assert_relayed(delta, MIB)
    for client in (pair.source, pair.destination):
        assert client.daemon.count(r"connected direct") == 0, f"{client.role} went direct despite route=relay"

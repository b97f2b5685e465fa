"""A direct tunnel through real NATs under loss, idleness past the conntrack timeout, and a
router that forgets its mappings."""

from __future__ import annotations

import time

import pytest

from natlab.checks import MIB, assert_direct, path_of, transfer
from natlab.lab import CONNTRACK_UDP_TIMEOUT, Lab, build_pair

pytestmark = [pytest.mark.natlab]

LOSS_PERCENT = 2


def test_lossy_path_16_mib_intact(lab: Lab) -> None:
    pair = build_pair(lab, "easy", "easy")
    pair.wait_direct()
    assert lab.probe(pair.src_host)["ok"]
    # 2% of the forwarded packets, both directions, dropped on the source's router
    router = lab.sites[0].router
    assert router is not None
    lab.add_loss(router, LOSS_PERCENT)
    delta = transfer(lab, pair.src_host, 16 * MIB, timeout=180)
    assert_direct(delta, 16 * MIB)
    # the loss was real: 2% of ~2 x 16 MiB in ~1.2 kB datagrams is hundreds of packets
    assert lab.lost_packets(router) > 100


@pytest.mark.slow
def test_idle_tunnel_outlives_the_conntrack_timeout(lab: Lab) -> None:
    pair = build_pair(lab, "easy", "easy")
    pair.wait_direct()
    assert lab.probe(pair.src_host)["ok"]
    mark_src, mark_dst = pair.source.daemon.mark(), pair.destination.daemon.mark()
    # A timed wait is the point of this test: nothing may happen for longer than the routers'
    # UDP conntrack timeout (30 s), so only the tunnel's own keepalive holds the NAT mappings
    # open. There is no event to wait on: the event under test is "nothing broke".
    time.sleep(CONNTRACK_UDP_TIMEOUT + 5)
    probe = lab.probe(pair.src_host, deadline=5.0)
    assert probe["ok"], f"after {CONNTRACK_UDP_TIMEOUT + 5} s idle the tunnel does not work: {probe}"
    delta = transfer(lab, pair.src_host, MIB // 4)
    assert_direct(delta, MIB // 4)
    # Both ends may dial at once; the loser is closed as "duplicate" shortly after the first
    # path is up (possibly after the probe above): that is not the path dropping while idle.
    for daemon, mark in ((pair.source.daemon, mark_src), (pair.destination.daemon, mark_dst)):
        assert daemon.count(r"direct path .* closed: (?!duplicate)", mark) == 0, (
            f"{daemon.name}: the direct path dropped while idle"
        )


@pytest.mark.parametrize("side", [0, 1], ids=["source-router", "destination-router"])
def test_conntrack_flush_while_idle_recovers_within_5_s(lab: Lab, side: int) -> None:
    pair = build_pair(lab, "easy", "easy")
    pair.wait_direct()
    assert lab.probe(pair.src_host)["ok"]
    router = lab.sites[side].router
    assert router is not None
    lab.flush_conntrack(router)
    flushed = time.monotonic()
    probe = lab.probe(pair.src_host, deadline=5.0)
    recovered = time.monotonic() - flushed
    assert probe["ok"] and recovered < 5.0, f"no working connection within 5 s of conntrack -F: {probe}"
    delta = transfer(lab, pair.src_host, MIB // 4)
    print(f"conntrack -F on the {('source', 'destination')[side]} router: recovered in {recovered:.2f}s, "
          f"then {path_of(delta, MIB // 4)}")

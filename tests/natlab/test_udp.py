"""UDP tunnels in the NAT lab (docs/udp.md): direct in an easy x easy cell, relayed in hard x
hard, each with 1400-byte datagrams (WireGuard-sized) echoed whole, the path proven by the
lab's counters (relay port vs. client-to-client bytes)."""

from __future__ import annotations

import pytest

from natlab.checks import RELAY_QUIET
from natlab.lab import Lab, build_pair

pytestmark = [pytest.mark.natlab]

COUNT = 300
SIZE = 1400


def udp_cell(lab: Lab, src: str, dst: str, expected: str) -> None:
    pair = build_pair(lab, src, dst, protocol="udp")
    if expected == "direct":
        pair.wait_direct(20.0)
    else:
        pair.wait_relay(20.0)
    # a first datagram opens the flow (and may wait for the path); then the counted run
    assert lab.send_udp(pair.src_host, 1, SIZE, deadline=20.0)["ok"]
    before = lab.counters()
    result = lab.send_udp(pair.src_host, COUNT, SIZE)
    delta = lab.counters() - before
    assert result["ok"], f"{src} -> {dst}: datagrams not echoed whole: {result}; counters {delta}"
    print(f"udp {src} -> {dst} ({expected}): {result['echoed']} x {SIZE} bytes echoed, {result['resent']} resent, "
          f"{result['elapsed']:.2f} s; relay port {delta.relay} bytes, client-to-client {delta.p2p} bytes")
    carried = 2 * COUNT * SIZE  # there and back
    if expected == "direct":
        assert delta.relay < RELAY_QUIET and delta.p2p >= carried, delta
    else:
        assert delta.relay >= carried and delta.p2p < RELAY_QUIET, delta


def test_udp_tunnel_direct_between_easy_nats(lab: Lab) -> None:
    udp_cell(lab, "easy", "easy", "direct")


def test_udp_tunnel_relayed_between_hard_nats(lab: Lab) -> None:
    udp_cell(lab, "hard", "hard", "relay")

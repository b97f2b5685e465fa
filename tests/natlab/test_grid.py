"""The NAT traversal grid (docs/natlab.md): every source preset x destination preset, plus same-lan.

Each cell asserts the path the grid requires and that 1 MiB is echoed intact, with the path
proven from outside the clients (relay-port and client-to-client counters)."""

from __future__ import annotations

import pytest

from natlab.checks import MIB, assert_direct, assert_relayed, path_of, transfer
from natlab.lab import EXPECTED, PRESETS, UDP_BLOCKED, Lab, build_pair
from natlab.test_udp_blocked import run_blocked_source

pytestmark = [pytest.mark.natlab]

PAYLOAD = MIB
DIRECT_WAIT = 20.0  # generous: the design aims at well under a second once both are matched
RELAY_WAIT = 20.0

# The full grid is ~16 x 6 s; the default CI selection is every cell anyway (see docs/natlab.md)
CELLS = [pytest.param(s, d, id=f"{s}-{d}") for s in PRESETS for d in PRESETS]


def run_cell(lab: Lab, src: str, dst: str, expected: str) -> str:
    pair = build_pair(lab, src, dst)
    if expected == "direct":
        pair.wait_direct(DIRECT_WAIT)
    else:
        pair.wait_relay(RELAY_WAIT)
    probe = lab.probe(pair.src_host, deadline=15.0)
    assert probe["ok"], f"no working tunnel {src} -> {dst}: {probe}"
    delta = transfer(lab, pair.src_host, PAYLOAD)
    if expected == "direct":
        assert_direct(delta, PAYLOAD)
    elif expected == "relay":
        assert_relayed(delta, PAYLOAD)
    else:  # relay-or-direct: relay is required, direct is the stretch goal
        assert path_of(delta, PAYLOAD) in ("relay", "direct"), f"payload path unclear: {delta}"
    return path_of(delta, PAYLOAD)


# One hard NAT and one easy: direct only by birthday probing, which meets with high
# probability, not always (docs/natlab.md: 10 of 10 per cell in the bench; the bar is 9 of 10).
# Such a cell gets a second try in a fresh lab before it fails, and a miss is printed.
PROBING = {(s, d) for s in ("easy", "fullcone") for d in ("hard",)} | {("hard", d) for d in ("easy", "fullcone")}


@pytest.mark.parametrize(("src", "dst"), CELLS)
def test_grid_cell(lab: Lab, src: str, dst: str, lab_certs, tmp_path_factory: pytest.TempPathFactory) -> None:
    if (src, dst) in PROBING:
        try:
            print(f"{src} -> {dst}: {run_cell(lab, src, dst, EXPECTED[(src, dst)])}")
            return
        except AssertionError as miss:
            print(f"{src} -> {dst}: probing missed on the first try ({str(miss).splitlines()[0]}); again")
        lab.close()
        lab = Lab(tmp_path_factory.mktemp("second-try"), lab_certs)
        try:
            print(f"{src} -> {dst}: {run_cell(lab, src, dst, EXPECTED[(src, dst)])} (second try)")
        finally:
            lab.close()
        return
    print(f"{src} -> {dst}: {run_cell(lab, src, dst, EXPECTED[(src, dst)])}")


@pytest.mark.parametrize("dst", PRESETS, ids=[f"{UDP_BLOCKED}-{d}" for d in PRESETS])
def test_udp_blocked_cell(lab: Lab, dst: str) -> None:
    """The source's router drops all UDP: relayed over TCP (even where the grid says direct),
    its legs on TCP and the destination's on UDP (status JSON), udp = "auto"."""
    run_blocked_source(lab, dst, "auto")


def test_same_lan_is_direct(lab: Lab) -> None:
    print(f"same-lan: {run_cell(lab, 'same-lan', 'same-lan', 'direct')}")

"""Assertions shared by the lab tests: which path a payload took, proven by counters."""

from __future__ import annotations

from natlab.lab import Counters, Host, Lab

MIB = 1024 * 1024
# "Near zero" on the relay port while a payload flows direct: the clients' relay links keep
# pinging (1/s each, ~100 bytes with headers), which is a few KiB at most over a transfer;
# a payload through the relay is at least twice its size there (in and out, echo both ways).
RELAY_QUIET = 64 * 1024


def transfer(lab: Lab, host: Host, nbytes: int, timeout: float = 120.0) -> Counters:
    """Send ``nbytes`` through the tunnel from ``host`` and check the echo; the counter deltas."""
    before = lab.counters()
    result = lab.send(host, nbytes, timeout)
    delta = lab.counters() - before
    assert result["ok"], f"payload of {nbytes} bytes not echoed intact: {result}; counters {delta}"
    return delta


def assert_direct(delta: Counters, nbytes: int) -> None:
    assert delta.relay < RELAY_QUIET, (
        f"payload of {nbytes} bytes should have gone direct, but the relay port saw {delta.relay} bytes ({delta})"
    )
    assert delta.p2p >= nbytes, (
        f"payload of {nbytes} bytes should have gone between the clients, but only {delta.p2p} bytes did ({delta})"
    )


def assert_relayed(delta: Counters, nbytes: int) -> None:
    assert delta.relay >= nbytes, (
        f"payload of {nbytes} bytes should have gone through the relay, but its port saw {delta.relay} bytes ({delta})"
    )
    assert delta.p2p < RELAY_QUIET, f"relayed payload, yet {delta.p2p} bytes went between the clients ({delta})"


def path_of(delta: Counters, nbytes: int) -> str:
    if delta.relay < RELAY_QUIET and delta.p2p >= nbytes:
        return "direct"
    if delta.relay >= nbytes and delta.p2p < RELAY_QUIET:
        return "relay"
    return f"unclear ({delta})"

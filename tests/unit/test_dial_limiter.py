"""The client's dial budget (connet_core.addresses.DialLimiter), driven with explicit time."""

from __future__ import annotations

from connet_core.addresses import DialLimiter
from connet_core.model import HostPort

A = HostPort("192.0.2.1", 1000)
B = HostPort("192.0.2.2", 1000)


def test_one_address_is_dialed_at_most_once_per_interval() -> None:
    limiter = DialLimiter(per_address=2.0, rate=100, burst=100)
    assert limiter.allow(A, 0.0)
    assert not limiter.allow(A, 1.9)
    assert limiter.allow(B, 1.9)  # another address is its own matter
    assert limiter.allow(A, 2.0)


def test_overall_rate_and_burst() -> None:
    limiter = DialLimiter(per_address=0.0, rate=10, burst=5)
    addresses = [HostPort("192.0.2.9", 2000 + i) for i in range(100)]
    allowed = sum(limiter.allow(a, 0.0) for a in addresses[:20])
    assert allowed == 5
    # one second refills ten, capped at the burst
    allowed = sum(limiter.allow(a, 1.0) for a in addresses[20:40])
    assert allowed == 5
    allowed = sum(limiter.allow(a, 1.3) for a in addresses[40:60])
    assert allowed == 3

"""qh3 2.1.0's defects against connet's adapter: the reproducers' simulated network
(``qh3_sim``: real qh3 cores, simulated time, reordering and loss) run with connet's
``Qh3Connection`` at both ends, as the endpoint drives it.

The scripts next to this file show the defects with qh3 alone and exit 1 while they are
there (run by hand, not by pytest). Here: the lost-FIN workaround must hold (the test fails
with the gate disabled: 11 of 300 runs stall); "reserved stream is missing" is not worked
around, so its test is a strict xfail: it starts passing, and so failing, once a qh3
release fixes it (then drop the marker).
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

pytest.importorskip("qh3")

from connet_quic._qh3 import Qh3Connection  # noqa: E402
from upstream.qh3_sim import run  # noqa: E402


class EndpointDriven(Qh3Connection):
    """What the endpoint does before each send: held datagrams first."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        self.release_held(now)
        return super().datagrams_to_send(now)


def connection(**kwargs: Any) -> Qh3Connection:
    return EndpointDriven(max_streams=100, reset_token=lambda cid: bytes(16), unread_pause=1 << 40,
                          held_limit=1 << 40, admit_interval=0.5, **kwargs)


def test_a_fin_written_after_the_data_arrives_despite_reordering() -> None:
    # qh3 alone: about 3% of these runs stall (a FIN lost for good; _qh3_fin.py)
    outcomes = collections.Counter(run(seed, fin_later=True, new_connection=connection) for seed in range(300))
    assert outcomes == {"ok": 300}


@pytest.mark.xfail(strict=True, reason="qh3 2.1.0: 'reserved stream is missing' (_qh3_core.py)")
def test_a_burst_with_loss_and_reordering_keeps_its_connection() -> None:
    # qh3 2.1.0 fails about 5 of these 1300 runs with "reserved stream is missing"; the other
    # outcomes (a handshake qh3 gives up under 10% loss) are not connet's to fix
    outcomes = collections.Counter(run(seed, loss=0.1, new_connection=connection) for seed in range(1300))
    assert not [outcome for outcome in outcomes if "reserved stream" in outcome], outcomes
    assert outcomes["ok"] >= 1280, outcomes

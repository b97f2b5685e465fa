"""The short soak: 200 checksummed uploads per transport, 8 at a time, through long-lived
and fresh tunnels, direct and relayed (tests/bench/soak.py runs thousands). Any stall (no
progress for 30 s), corruption or cut fails the test with the uploads that went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.soak import soak, table

UPLOADS = 50  # per configuration: 4 configurations make the 200
SIZE = {"qh3": 4 << 20, "aioquic": 1 << 20}  # aioquic moves ~30 MB/s here: smaller, same count


@pytest.mark.parametrize("transport", ["qh3", "aioquic"])
async def test_200_uploads_arrive_intact_without_a_stall(tmp_path: Path, certs: Path, transport: str) -> None:
    results = []
    for route in ("direct", "relay"):
        for tunnel in ("long-lived", "fresh"):
            results.append(await soak(tmp_path / f"{route}-{tunnel}", certs, transport=transport, route=route,
                                      tunnel=tunnel, uploads=UPLOADS, size=SIZE[transport]))
    errors = [e for r in results for e in r.errors]
    assert sum(r.ok for r in results) == 4 * UPLOADS, table(results, SIZE[transport]) + "\n" + "\n".join(errors[:20])

"""The soak: thousands of checksummed uploads through real tunnels, stalls counted.

    python tests/bench/soak.py                          # 2000 x 16 MiB per transport
    python tests/bench/soak.py --uploads 200 --transports qh3 --routes direct

Each transport gets ``--uploads`` uploads of ``--size`` MiB, split evenly over its
configurations (route x tunnel kind: 500 each by default), ``--parallel`` at a time;
``long-lived`` uses one peer connection for all of them, ``fresh`` restarts the source
client after every batch (a new QUIC connection). A stall is an upload without progress for
``--stall-after`` seconds. Prints a table of uploads, stalls, corrupted (SHA-256 mismatch), failed (cut and reported) and the slowest upload; the
daemons' logs of a configuration with any bad upload are kept under ``--keep``. Exits 1 if
any upload stalled, was corrupted or failed. Too long for CI: the e2e suite runs a short
version (tests/e2e/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the e2e support package

from support.daemons import CONNET  # noqa: E402
from support.soak import soak, table  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=2000,
                        help="uploads per transport, split over its configurations (default 2000)")
    parser.add_argument("--size", type=int, default=16, help="MiB per upload (default 16)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--stall-after", type=float, default=30.0)
    parser.add_argument("--transports", default="qh3,aioquic")
    parser.add_argument("--routes", default="direct,relay")
    parser.add_argument("--tunnels", default="long-lived,fresh")
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "connet-soak",
                        help="where the logs of a configuration with bad uploads go")
    args = parser.parse_args()
    size = args.size << 20
    routes, tunnels = args.routes.split(","), args.tunnels.split(",")
    each = -(-args.uploads // (len(routes) * len(tunnels)))  # rounded up: at least --uploads in all
    results = []
    with tempfile.TemporaryDirectory(prefix="connet-soak-") as tmp:
        certs = Path(tmp) / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(certs), "--host", "localhost", "--host", "127.0.0.1"],
                       check=True, capture_output=True)
        for transport in args.transports.split(","):
            for route in routes:
                for tunnel in tunnels:
                    began = time.monotonic()
                    work = args.keep / f"{transport}-{route}-{tunnel}"
                    result = await soak(work, certs, transport=transport, route=route, tunnel=tunnel,
                                        uploads=each, size=size, parallel=args.parallel,
                                        stall_after=args.stall_after)
                    results.append(result)
                    print(f"  {transport} {route} {tunnel}: {result.ok}/{result.uploads} ok in "
                          f"{time.monotonic() - began:.0f}s" + (f"; logs in {work}" if result.errors else ""),
                          flush=True)
                    for error in result.errors[:10]:
                        print(f"    {error}", flush=True)
    print()
    print(table(results, size))
    return 1 if any(r.stalls or r.corrupted or r.failed for r in results) else 0


if __name__ == "__main__":
    try:
        import uvloop  # the daemons use it; measure the harness the same way

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main()))

"""How fast connet finds a path through each NAT pair of the lab (a benchmark, not a test).

Runs every cell of the NAT lab grid (source preset x destination preset, plus same-lan) several
times in fresh namespaces (tests/natlab/lab.py) and prints a table of medians, in seconds from
the moment both clients were launched (so Python start-up is included; the "after control"
column subtracts the later client's "connected to control server"):

  control   both clients connected to the control server
  working   the first 1 KiB echoed intact through the source (any path)
  direct    the source logged its direct path to the destination ("-" when none came within
            --direct-wait; n/N says in how many runs it did)
  p2p packets  UDP packets between the two sites' public addresses until the direct path
            (or the end of the wait), counted on the internet bridge: punch or birthday
            probes, QUIC handshakes and the 1 KiB probe (the probe budget, measured)

Needs root, iproute2, nftables and conntrack, like the lab tests. Run from the repository:

    /work/venv/bin/python tests/bench/natlab_traversal.py --runs 5 --json natlab_traversal.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for natlab and support

from natlab.lab import EXPECTED, PRESETS, SERVER_IP, Lab, LabError, build_pair, missing_prerequisite, sh, sweep_stale  # noqa: E402
from natlab.portmap_lab import MAPPING_CELLS  # noqa: E402
from support.daemons import CONNET  # noqa: E402

CELLS: list[tuple[str, str]] = [(s, d) for s in PRESETS for d in PRESETS] + [("same-lan", "same-lan")] + MAPPING_CELLS


def run_once(workdir: Path, certs: Path, src: str, dst: str, direct_wait: float) -> dict:
    lab = Lab(workdir, certs, log_level="info")  # debug logging would slow what is measured
    try:
        pair = build_pair(lab, src, dst)
        probe = lab.probe(pair.src_host, deadline=15.0)
        working = time.monotonic() - pair.started if probe["ok"] else None
        try:
            pair.source.daemon.wait_for(r"peer \S+ connected direct via", max(0.0, pair.started + direct_wait - time.monotonic()))
        except AssertionError:
            pass  # no direct path within the window: recorded as None below
        direct_at = pair.source.daemon.first_time(r"peer \S+ connected direct via")
        # UDP packets between the two sites until now (read from the internet bridge, outside
        # the clients): the punch or birthday probes and the QUIC handshake, plus the 1 KiB probe
        p2p_packets = _p2p_packets(lab)
        controls = [c.daemon.first_time(r"connected to control server") for c in (pair.source, pair.destination)]
        control = max(controls) - pair.started if None not in controls else None  # type: ignore[type-var]
        return {
            "control": control,
            "working": working,
            "direct": direct_at - pair.started if direct_at is not None else None,
            "p2p_packets": p2p_packets,
        }
    finally:
        lab.close()


def _p2p_packets(lab: Lab) -> int:
    data = json.loads(sh("nft", "-j", "list", "counter", "bridge", "natlab", "p2p", ns=lab.inet))
    return next(int(item["counter"]["packets"]) for item in data["nftables"] if "counter" in item)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt0(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cells", nargs="*", help="only these cells, e.g. easy-hard same-lan")
    parser.add_argument("--direct-wait", type=float, default=10.0, help="seconds to wait for a direct path")
    parser.add_argument("--json", type=Path, default=Path("natlab_traversal.json"))
    args = parser.parse_args(argv)

    reason = missing_prerequisite()
    if reason is not None:
        print(f"cannot run the NAT lab: {reason}", file=sys.stderr)
        return 2
    sweep_stale()
    cells = [c for c in CELLS if not args.cells or f"{c[0]}-{c[1]}" in args.cells or c[0] in args.cells]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="natlab-bench-") as tmp:
        root = Path(tmp)
        certs = root / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(certs), "--host", SERVER_IP], check=True, capture_output=True)
        for src, dst in cells:
            name = f"{src}-{dst}"
            runs = []
            for index in range(args.runs):
                workdir = root / f"{name}-{index}"
                workdir.mkdir()
                try:
                    runs.append(run_once(workdir, certs, src, dst, args.direct_wait))
                except (LabError, AssertionError, subprocess.TimeoutExpired) as exc:
                    runs.append({"control": None, "working": None, "direct": None, "error": str(exc).splitlines()[0]})
            results[name] = {
                "expected": EXPECTED.get((src, dst), "direct"),
                "runs": runs,
                "median_control": median([r["control"] for r in runs]),
                "median_working": median([r["working"] for r in runs]),
                "median_direct": median([r["direct"] for r in runs]),
                "median_direct_after_control": median(
                    [r["direct"] - r["control"] for r in runs if r["direct"] is not None and r["control"] is not None]
                ),
                "direct_runs": sum(r["direct"] is not None for r in runs),
                "median_p2p_packets": median([r.get("p2p_packets") for r in runs]),
                "max_p2p_packets": max((r.get("p2p_packets") or 0 for r in runs), default=0),
            }
            print(f"  {name}: done", file=sys.stderr, flush=True)

    header = (f"| {'cell (src-dst)':<18} | {'expected':<15} | control | working | direct | after control | direct runs "
              "| p2p packets (median/max) |")
    print(header)
    print("|" + "|".join("-" * len(h) for h in header.split("|")[1:-1]) + "|")
    for name, r in results.items():
        print(f"| {name:<18} | {r['expected']:<15} | {fmt(r['median_control']):>7} | {fmt(r['median_working']):>7} | "
              f"{fmt(r['median_direct']):>6} | {fmt(r['median_direct_after_control']):>13} | "
              f"{r['direct_runs']:>5}/{len(r['runs'])}     | {fmt0(r['median_p2p_packets']):>11} / {r['max_p2p_packets']:<10} |")
    args.json.write_text(json.dumps({"runs_per_cell": args.runs, "direct_wait": args.direct_wait, "cells": results}, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""connet benchmark on loopback: prints a table and writes JSON.

    python tests/bench/run.py --quick          # ~2 minutes
    python tests/bench/run.py                  # the full run for docs/performance.md
    python tests/bench/run.py --transports qh3 --only direct

Every number comes from real processes (the ``connet`` CLI, as the e2e tests start it),
and every ceiling is measured in the same run: plain TCP, a one-hop asyncio TCP forwarder,
and the raw QUIC transport (plugins/connet_quic, same library, windows and chunk size,
a sender and a receiver process, no proxy). Each configuration runs ``--repeat`` times and
the median is reported; the machine is shared, so single runs are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the support package the e2e tests use

from bench_support import (  # noqa: E402
    CHUNK,
    Cluster,
    cpu_seconds,
    rss_bytes,
    sink_server,
    start_forwarder,
    upload,
)

MiB = 1024 * 1024
STALL_TIMEOUT = 180  # seconds for one transfer: far above the slowest configuration's time


@dataclass
class Row:
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


class Report:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def add(self, name: str, unit: str, value: float, **extra: Any) -> None:
        row = self.rows.setdefault(name, Row(name, unit))
        row.values.append(value)
        row.extra.update(extra)

    def print(self) -> None:
        width = max(len(n) for n in self.rows) + 2
        print(f"\n{'measurement':<{width}} {'median':>10}  unit       runs")
        for row in self.rows.values():
            digits = 2 if row.unit == "x" else 1  # ratios: 1.15 is the line, not 1.1 or 1.2
            runs = ", ".join(f"{v:.{digits}f}" for v in row.values)
            extra = "".join(f"  {k}={v}" for k, v in row.extra.items())
            print(f"{row.name:<{width}} {row.median:>10.{digits}f}  {row.unit:<10} [{runs}]{extra}")

    def json(self) -> dict[str, Any]:
        return {n: {"unit": r.unit, "median": r.median, "runs": r.values, **r.extra} for n, r in self.rows.items()}


async def parallel_upload(port: int, total: int, conns: int) -> float:
    """MB/s (10^6) for ``total`` bytes split over ``conns`` TCP connections to ``port``."""
    each = total // conns
    started = time.perf_counter()
    got = await asyncio.gather(*(upload(port, each) for _ in range(conns)))
    elapsed = time.perf_counter() - started
    assert all(g == each for g in got), f"sink counted {got}, expected {each} each"
    return conns * each / elapsed / 1e6


async def bench_ceilings(report: Report, size: int, repeat: int) -> None:
    async with sink_server() as sink:
        for _ in range(repeat):
            report.add("tcp plain, 1 conn", "MB/s", await parallel_upload(sink.port, size, 1))
        forwarder, fport = start_forwarder(sink.port)
        try:
            for _ in range(repeat):
                before = cpu_seconds(forwarder.pid)
                report.add("tcp asyncio forwarder, 1 conn", "MB/s", await parallel_upload(fport, size, 1))
                report.add("cpu s/GiB: asyncio forwarder", "s/GiB", (cpu_seconds(forwarder.pid) - before) / (size / 2**30))
        finally:
            forwarder.kill()
            forwarder.wait()


def bench_raw(report: Report, transport: str, size: int, repeat: int, streams: int, probe: bool = True) -> None:
    label = f"{transport} raw transport, {streams} stream{'s' if streams > 1 else ''}"
    if not probe:
        label += ", no MTU probe (1200 B datagrams)"
    for _ in range(repeat):
        result = raw_run(transport, size, streams, probe)
        report.add(label, "MB/s", result["mbps"])
        report.add(f"cpu s/GiB: {label}: sender", "s/GiB", result["sender_cpu_per_gib"])
        report.add(f"cpu s/GiB: {label}: receiver", "s/GiB", result["receiver_cpu_per_gib"])


async def bench_tunnel(report: Report, transport: str, route: str, size: int, repeat: int, conns_list: list[int]) -> None:
    async with sink_server() as sink:
        with Cluster(transport=transport, route=route, target_port=sink.port) as cluster:
            await cluster.ready()
            procs = cluster.path_processes()
            for conns in conns_list:
                for _ in range(repeat):
                    before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
                    mbps = await timed_upload(cluster, size, conns)
                    report.add(f"{transport} {route} tunnel, {conns} conn{'s' if conns > 1 else ''}", "MB/s", mbps)
                    if conns == 1:
                        for name, p in procs.items():
                            used = cpu_seconds(p.pid) - before[name]
                            report.add(f"cpu s/GiB: {transport} {route} {name}", "s/GiB", used / (size / 2**30))


def raw_run(transport: str, size: int, streams: int = 1, probe: bool = True) -> dict[str, float]:
    """One raw transport transfer (tests/bench/raw_transport.py): its JSON line."""
    out = subprocess.run(
        [sys.executable, str(HERE / "raw_transport.py"), "--transport", transport, "--bytes", str(size),
         "--streams", str(streams), *([] if probe else ["--probe-datagram-size", "0"])],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def timed_upload(cluster: Cluster, size: int, conns: int) -> float:
    """MB/s through the cluster's tunnel; a stall or a cut connection ends the benchmark with
    the daemons' logs."""
    try:
        async with asyncio.timeout(STALL_TIMEOUT):
            return await parallel_upload(cluster.source_port, size, conns)
    except TimeoutError:
        failure = f"no progress in {STALL_TIMEOUT}s"
    except (ConnectionError, AssertionError) as exc:
        failure = f"the transfer failed: {exc!r}"
    logs = Path(tempfile.gettempdir()) / "connet-bench-stall.log"
    logs.write_text(cluster.daemons.dump())
    raise SystemExit(f"{cluster.transport} {cluster.route} x{conns}: {failure}; logs: {logs}")


async def bench_targets(report: Report, transport: str, size: int, rounds: int) -> None:
    """The issue's ratios, measured so that machine noise hits both sides alike: raw transport,
    direct tunnel and relayed tunnel (1 connection each) take turns, ``rounds`` times, the
    order rotating every round, and every round gives its own direct/raw and relay/direct.
    Both clusters are up throughout and warmed by one transfer that is not counted (the
    tunnel's QUIC connection is long-lived; the raw transport's is new for every transfer,
    so it pays its own handshake and slow start, as a fresh tunnel would)."""
    label = f"{transport} targets"
    async with sink_server() as sink:
        with Cluster(transport=transport, route="direct", target_port=sink.port) as direct, \
                Cluster(transport=transport, route="relay", target_port=sink.port) as relay:
            for cluster in (direct, relay):
                await cluster.ready()
                await timed_upload(cluster, size // 4, 1)
            harness = os.getpid()

            async def tunnel(cluster: Cluster) -> tuple[float, dict[str, float]]:
                procs = {**cluster.path_processes(), "load generator + sink": None}
                before = {name: cpu_seconds(p.pid if p else harness) for name, p in procs.items()}
                mbps = await timed_upload(cluster, size, 1)
                cpu = {}
                for name, p in procs.items():
                    cpu[name] = (cpu_seconds(p.pid if p else harness) - before[name]) / (size / 2**30)
                    report.add(f"cpu s/GiB: {label}: {cluster.route} {name}", "s/GiB", cpu[name])
                return mbps, cpu

            async def raw() -> tuple[float, dict[str, float]]:
                result = await asyncio.to_thread(raw_run, transport, size)
                cpu = {"sender": result["sender_cpu_per_gib"], "receiver": result["receiver_cpu_per_gib"]}
                for name, value in cpu.items():
                    report.add(f"cpu s/GiB: {label}: raw {name}", "s/GiB", value)
                return result["mbps"], cpu

            kinds: list[tuple[str, Callable[[], Awaitable[tuple[float, dict[str, float]]]]]] = [
                ("raw", raw), ("direct", lambda: tunnel(direct)), ("relay", lambda: tunnel(relay))]
            for round_ in range(rounds):
                got, cpu = {}, {}
                for name, measure in kinds[round_ % 3:] + kinds[:round_ % 3]:
                    got[name], cpu[name] = await measure()
                    report.add(f"{label}: {name}, 1 conn", "MB/s", got[name])
                report.add(f"{label}: direct / raw (per round)", "%", 100 * got["direct"] / got["raw"])
                report.add(f"{label}: relay / direct (per round)", "%", 100 * got["relay"] / got["direct"])
                # the CPU targets: what a tunnel costs per byte against the bare transport, which
                # the 2 shared cores cannot blur the way they blur throughput ratios
                raw_pair = cpu["raw"]["sender"] + cpu["raw"]["receiver"]
                report.add(f"{label}: cpu direct (source + destination) / raw (sender + receiver)", "x",
                           (cpu["direct"]["source"] + cpu["direct"]["destination"]) / raw_pair)
                report.add(f"{label}: cpu relay process / raw (sender + receiver)", "x",
                           cpu["relay"]["relay"] / raw_pair)


async def bench_latency_and_rates(report: Report, transport: str, requests: int, repeat: int, open_conns: int) -> None:
    from bench_support import echo_latency, new_connections_per_second, hold_connections
    from support.services import echo_server

    async with echo_server() as echo_port:
        started = time.perf_counter()
        with Cluster(transport=transport, route="direct", target_port=echo_port) as cluster:
            first_byte = await cluster.ready()
            report.add(f"{transport} time from client start to first byte", "ms", (first_byte - started) * 1000)
            for _ in range(repeat):
                direct = await echo_latency(echo_port, requests)
                tunnel = await echo_latency(cluster.source_port, requests)
                report.add("latency p50, direct TCP (100 B echo)", "ms", direct[0] * 1000)
                report.add("latency p99, direct TCP (100 B echo)", "ms", direct[1] * 1000)
                report.add(f"latency p50, {transport} tunnel (100 B echo)", "ms", tunnel[0] * 1000)
                report.add(f"latency p99, {transport} tunnel (100 B echo)", "ms", tunnel[1] * 1000)
                report.add(f"{transport} new tunneled connections/s", "conn/s",
                           await new_connections_per_second(cluster.source_port, requests))
            src = cluster.source.proc.pid
            report.add(f"{transport} source RSS idle", "MiB", rss_bytes(src) / MiB)
            async with hold_connections(cluster.source_port, open_conns) as held:
                report.add(f"{transport} source RSS with {held} open tunneled conns", "MiB", rss_bytes(src) / MiB)


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    versions = {}
    for dist in ("aioquic", "qh3", "uvloop"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), **versions,
            "kernel": platform.release()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small transfers, 2 repeats (~2 minutes)")
    parser.add_argument("--transports", default="aioquic,qh3")
    parser.add_argument("--only", default="ceilings,iperf3,targets,raw,direct,relay,latency,udp",
                        help="comma list of: ceilings, iperf3, targets, raw, direct, relay, latency, udp")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the interleaved targets section (default 5, 2 with --quick)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON (default: a temp file)")
    args = parser.parse_args()
    size = (16 if args.quick else 64) * MiB
    repeat = 2 if args.quick else 3
    requests = 200 if args.quick else 1000
    open_conns = 200 if args.quick else 1000
    # the targets section moves more per transfer: at qh3's 300 MB/s 64 MiB take 0.2 s
    target_size = (32 if args.quick else 256) * MiB
    rounds = args.rounds or (2 if args.quick else 5)
    only = set(args.only.split(","))
    transports = args.transports.split(",")
    report = Report()
    info = machine()
    print("machine:", json.dumps(info))
    print(f"transfer {size // MiB} MiB per run, {repeat} runs per configuration, chunk {CHUNK} B; "
          f"targets: {target_size // MiB} MiB per run, {rounds} interleaved rounds")
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if "ceilings" in only:
        steps.append(("ceilings", lambda: bench_ceilings(report, size, repeat)))
    if "iperf3" in only:  # a real program through connet's default, ssh -L and straight
        from iperf3_tunnels import bench_iperf3

        steps.append(("iperf3", lambda: bench_iperf3(report, 5.0 if args.quick else 10.0, repeat, ("direct", "relay"))))
    for t in transports:
        if "targets" in only:
            steps.append((f"targets {t}", lambda t=t: bench_targets(report, t, target_size, rounds)))
        if "raw" in only:
            steps.append((f"raw {t}", lambda t=t: asyncio.to_thread(bench_raw, report, t, size, repeat, 1)))
            steps.append((f"raw {t} x8", lambda t=t: asyncio.to_thread(bench_raw, report, t, size, repeat, 8)))
            # what the path MTU probe brings (1452-byte datagrams on loopback), in this run
            steps.append((f"raw {t} no probe", lambda t=t: asyncio.to_thread(bench_raw, report, t, size, repeat, 1, False)))
        if "direct" in only:
            steps.append((f"direct {t}", lambda t=t: bench_tunnel(report, t, "direct", size, repeat, [1, 8])))
        if "relay" in only:
            steps.append((f"relay {t}", lambda t=t: bench_tunnel(report, t, "relay", size, repeat, [1, 8])))
        if "latency" in only:
            steps.append((f"latency {t}", lambda t=t: bench_latency_and_rates(report, t, requests, repeat, open_conns)))
    if "udp" in only:  # iperf3 -u through UDP tunnels: loss at fixed rates, datagrams per second
        from udp_tunnels import bench_udp

        steps.append(("udp", lambda: bench_udp(report, transports, ("direct", "relay"), 3.0 if args.quick else 5.0)))
    for label, step in steps:
        started = time.perf_counter()
        await step()
        print(f"  {label}: {time.perf_counter() - started:.1f}s", flush=True)
    report.print()
    path = args.json or Path(tempfile.gettempdir()) / "connet-bench.json"
    path.write_text(json.dumps({"machine": info, "size": size, "repeat": repeat, "target_size": target_size,
                                "rounds": rounds, "results": report.json()}, indent=2))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    try:
        import uvloop  # the daemons use it when installed; measure the harness the same way

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())

"""UDP through a connet tunnel (docs/udp.md): throughput and loss at fixed rates, and
datagrams per second, direct and relayed, per transport.

    python tests/bench/udp_tunnels.py                          # both transports, both routes
    python tests/bench/udp_tunnels.py --transports qh3 --routes direct --seconds 3

``iperf3 -u`` through the tunnel (its control connection through a TCP tunnel on the same
port number) to an ``iperf3 -s`` on loopback: at each fixed rate with 1200-byte datagrams
(what a frame carries on every leg, so every datagram is a DATAGRAM frame), the received
rate and the loss iperf3 reports; then 64-byte datagrams at an unlimited offered rate
(``-b 0``), the datagrams per second that came through. Besides, the CPU-seconds per GiB of
the tunnel's processes (both clients, and the server for a relayed tunnel), from /proc. Also
run as the ``udp`` section of ``tests/bench/run.py``. Needs ``iperf3``; nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/bench
from bench_support import cpu_seconds  # noqa: E402
from support.cluster import TOKENS, start_server  # noqa: E402
from support.daemons import CONNET, Daemons  # noqa: E402

GiB = 1 << 30
RATES = ("20M", "100M", "300M")  # offered, bits per second
LENGTH = 1200


def free_port_both() -> int:
    """A port number free for TCP and UDP on loopback (iperf3 uses both)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with contextlib.suppress(OSError):
                udp.bind(("127.0.0.1", port))
                return port
    raise SystemExit("no port free for both TCP and UDP")


@contextlib.contextmanager
def udp_cluster(transport: str, route: str, target: int) -> Iterator[tuple[int, dict[str, int]]]:
    """connet server + destination + source with a TCP and a UDP tunnel on one port number:
    (the source's port, {process: pid} of the tunnel's processes)."""
    work = Path(tempfile.mkdtemp(prefix="connet-udp-bench-"))
    daemons = Daemons(work)
    os.environ["CONNET_TRANSPORT"] = transport
    try:
        certs = work / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(certs), "--host", "localhost", "--host", "127.0.0.1"],
                       check=True, capture_output=True)
        info = start_server(daemons, certs)
        source_port = free_port_both()
        ends = {}
        for name, token, table, port in (("destination", TOKENS[0], "destinations", target),
                                         ("source", TOKENS[1], "sources", source_port)):
            config = work / f"{name}.toml"
            config.write_text(
                f'log-level = "info"\n[client.{table}.perf-control]\naddr = "127.0.0.1:{port}"\nroute = "{route}"\n'
                f'[client.{table}.perf-data]\naddr = "127.0.0.1:{port}"\nroute = "{route}"\nprotocol = "udp"\n')
            args = [*info.client_args(token), "--config", str(config), "--log-level", "info"]
            ends[name] = daemons.start(name, args)
        ends["destination"].wait_for("relay .* connected" if route == "relay" else "peer .* connected direct", 30)
        ends["source"].wait_for("relay .* connected" if route == "relay" else "peer .* connected direct", 30)
        pids = {name: d.proc.pid for name, d in ends.items()}
        if route == "relay":
            pids["server (relay)"] = info.daemon.proc.pid
        yield source_port, pids
    finally:
        os.environ.pop("CONNET_TRANSPORT", None)
        daemons.close()
        shutil.rmtree(work, ignore_errors=True)


def iperf3_udp(port: int, rate: str, length: int, seconds: float, pids: dict[str, int]) -> dict[str, Any]:
    """One ``iperf3 -u`` run through the tunnel: iperf3's end summary, plus CPU s/GiB."""
    before = sum(cpu_seconds(p) for p in pids.values())
    for attempt in range(3):  # the first control connection may meet a path still settling
        run = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", rate, "-l", str(length),
                              "-t", str(seconds), "--json"], capture_output=True, text=True, timeout=seconds + 60)
        report = json.loads(run.stdout or "{}")
        if "sum" in report.get("end", {}):
            break
    else:
        raise SystemExit(f"iperf3 -u through the tunnel failed: {report.get('error', run.stderr)}")
    cpu = sum(cpu_seconds(p) for p in pids.values()) - before
    result = report["end"]["sum"]
    received = result["packets"] - result["lost_packets"]
    result["received_bytes"] = received * length
    result["cpu_s_per_gib"] = cpu / (received * length / GiB) if received else float("nan")
    return result


@contextlib.contextmanager
def iperf3_server() -> Iterator[int]:
    port = free_port_both()
    proc = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait(10)


async def bench_udp(report: Any, transports: list[str], routes: tuple[str, ...], seconds: float,
                    rates: tuple[str, ...] = RATES) -> None:
    """Rows for ``tests/bench/run.py``'s report (``report.add(name, unit, value)``)."""
    if shutil.which("iperf3") is None:
        print("  udp: iperf3 is not installed (apt-get install iperf3): skipped")
        return
    with iperf3_server() as target:
        for transport in transports:
            for route in routes:
                with udp_cluster(transport, route, target) as (port, pids):
                    for rate in rates:
                        r = await asyncio.to_thread(iperf3_udp, port, rate, LENGTH, seconds, pids)
                        name = f"udp {transport} {route} -b {rate} -l {LENGTH}"
                        report.add(f"{name}: received", "Mbit/s", r["received_bytes"] * 8 / seconds / 1e6)
                        report.add(f"{name}: loss", "%", r["lost_percent"])
                        report.add(f"cpu s/GiB: {name}: {' + '.join(pids)}", "s/GiB", r["cpu_s_per_gib"])
                    r = await asyncio.to_thread(iperf3_udp, port, "0", 64, seconds, pids)
                    name = f"udp {transport} {route} -b 0 -l 64"
                    report.add(f"{name}: datagrams through", "dgram/s",
                               (r["packets"] - r["lost_packets"]) / seconds)
                    report.add(f"{name}: offered", "dgram/s", r["packets"] / seconds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transports", default="aioquic,qh3")
    parser.add_argument("--routes", default="direct,relay")
    parser.add_argument("--rates", default=",".join(RATES))
    args = parser.parse_args()
    from run import Report

    report = Report()
    started = time.perf_counter()
    await bench_udp(report, args.transports.split(","), tuple(args.routes.split(",")), args.seconds,
                    tuple(args.rates.split(",")))
    report.print()
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())

"""Capacity of control instances: idle clients held, and what they cost (docs/scaling.md).

    python tests/bench/control_capacity.py --clients 500 --instances 1
    python tests/bench/control_capacity.py --clients 500 --instances 3

Starts a redis-server (with --instances > 1) and ``connet control`` processes on loopback,
then one load-generator process per instance (``... generate``): simulated clients speaking
the real protocol over the real QUIC transport (dial with ALPN connet-control, Authenticate,
Announce one destination each, then stay idle answering pushes). Once every client holds a
session, the instances are measured over an idle window: the clients each reports, CPU
seconds used, RSS before and after the clients. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from bench_support import cpu_seconds, rss_bytes  # noqa: E402
from support.daemons import CONNET, Daemons  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

TOKEN = "bench-token"
PER_ENDPOINT = 50  # simulated clients sharing one UDP socket (and one observed address)


# --- the load generator (its own process) --------------------------------------------------------


async def generate(addr: str, count: int, ca: Path, prefix: str) -> None:
    from connet_core.certs import make_identity
    from connet_core.model import HostPort
    from connet_core.plugins import load_hooks
    from connet_core.protocol.messages import (
        ALPN_CONTROL,
        Announce,
        AnnounceRefused,
        Authenticate,
        Authenticated,
        PeersUpdate,
        RelaysUpdate,
    )
    from connet_core.protocol.streams import MessageStream
    from connet_core.transport import Trust

    transport = load_hooks().transport("auto")
    identity, der, _ = make_identity()
    target = HostPort.parse(addr)
    trust = Trust(server_name="localhost", cafile=ca)
    gate = asyncio.Semaphore(16)  # handshakes at once: a burst of new clients, not a flood
    held = 0
    done = asyncio.Event()
    endpoints = [await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=[])
                 for _ in range(math.ceil(count / PER_ENDPOINT))]

    async def session(index: int) -> MessageStream:
        endpoint = endpoints[index // PER_ENDPOINT]
        while True:
            try:
                async with gate:
                    conn = await endpoint.dial(target, alpn=ALPN_CONTROL, trust=trust, timeout=10)
                    messages = MessageStream(await conn.open_stream())
                    await messages.send(Authenticate(token=TOKEN))
                    await messages.recv(Authenticated, timeout=10)
                    await messages.send(Announce(f"{prefix}-{index}", "destination", "any", der,
                                                 (str(endpoint.local_address),)))
                return messages
            except Exception as exc:  # noqa: BLE001 - a load generator retries whatever failed
                print(f"client {index}: {type(exc).__name__}: {exc}; retrying", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)

    async def one(index: int) -> None:
        nonlocal held
        messages = await session(index)
        held += 1
        if held == count:
            done.set()
        while True:  # idle: take the pushes (relays, peers) as a client would; a lost one dials again
            try:
                await messages.recv((PeersUpdate, RelaysUpdate, AnnounceRefused))
            except Exception as exc:  # noqa: BLE001 - counted: the bench reports lost sessions
                print(f"lost: client {index}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                messages = await session(index)

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await done.wait()
    print(f"held {count}", flush=True)
    await asyncio.gather(*tasks)


# --- the bench ------------------------------------------------------------------------------------


def report(status_url: str) -> dict:
    with urllib.request.urlopen(status_url, timeout=10) as response:
        return json.loads(response.read())


def run(clients: int, instances: int, window: float) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="connet-capacity-"))
    subprocess.run([*CONNET, "cert", "--out", str(work / "certs"), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    certs = work / "certs"
    daemons = Daemons(work)
    redis = RedisServer(work).start() if instances > 1 else None
    generators: list[subprocess.Popen] = []
    try:
        controls = []
        for n in range(instances):
            config = work / f"control{n}.toml"
            config.write_text(
                "[control]\naddr = \"127.0.0.1:0\"\nstatus-addr = \"127.0.0.1:0\"\n"
                f'cert-file = "{certs / "server.pem"}"\nkey-file = "{certs / "server-key.pem"}"\n'
                f'client-tokens = ["{TOKEN}"]\n'
                + (f'[plugins.redis]\nurl = "{redis.url}"\n' if redis else ""))
            daemon = daemons.start(f"control{n}", ["control", "--config", str(config), "--log-level", "info"])
            controls.append(daemon)
        ports, statuses = [], []
        for daemon in controls:
            ports.append(daemon.listening("control", "udp")[1])
            host, port = daemon.listening("status", "tcp")
            statuses.append(f"http://{host}:{port}/")
        rss_before = [rss_bytes(d.proc.pid) for d in controls]
        redis_before = rss_bytes(redis.proc.pid) if redis else 0
        started = time.monotonic()
        for n, port in enumerate(ports):
            generators.append(subprocess.Popen(
                [sys.executable, __file__, "generate", f"127.0.0.1:{port}", str(clients), str(certs / "ca.pem"),
                 f"i{n}"], stdout=subprocess.PIPE, stderr=(work / f"generator{n}.log").open("w"), text=True))
        for generator in generators:
            assert generator.stdout is not None
            line = generator.stdout.readline()
            assert line.startswith("held"), f"a generator ended: {line!r}"
        ramp = time.monotonic() - started
        cpu0 = [cpu_seconds(d.proc.pid) for d in controls]
        gen0 = [cpu_seconds(g.pid) for g in generators]
        redis0 = cpu_seconds(redis.proc.pid) if redis else 0.0
        time.sleep(window)  # the measurement window itself: idle clients, nothing else happens
        cpu = [cpu_seconds(d.proc.pid) - c for d, c in zip(controls, cpu0)]
        gen = [cpu_seconds(g.pid) - c for g, c in zip(generators, gen0)]
        redis_cpu = cpu_seconds(redis.proc.pid) - redis0 if redis else 0.0
        held = [len(report(url)["clients"]) for url in statuses]
        lost = sum((work / f"generator{n}.log").read_text().count("lost:") for n in range(instances))
        names = [len(report(url)["names"]) for url in statuses]
        rss_after = [rss_bytes(d.proc.pid) for d in controls]
        rows = []
        for n in range(instances):
            per_client = (rss_after[n] - rss_before[n]) / max(1, held[n]) / 1024
            rows.append(f"| {instances} | control{n} | {held[n]} | {names[n]} | {100 * cpu[n] / window:.1f}% | "
                        f"{rss_after[n] / 2**20:.0f} MiB | {per_client:.0f} KiB | {100 * gen[n] / window:.1f}% |")
        total = sum(held)
        rows.append(f"| {instances} | total | {total} | | {100 * sum(cpu) / window:.1f}% | "
                    f"{sum(rss_after) / 2**20:.0f} MiB | | ramp {ramp:.1f} s; sessions lost {lost} |")
        if redis:
            rows.append(f"| {instances} | redis-server | | | {100 * redis_cpu / window:.1f}% | "
                        f"{rss_bytes(redis.proc.pid) / 2**20:.0f} MiB (+{(rss_bytes(redis.proc.pid) - redis_before) / 2**20:.1f}) | | |")
        return rows
    finally:
        for generator in generators:
            generator.kill()
            generator.wait()
        daemons.close()
        if redis:
            redis.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        _, _, addr, count, ca, prefix = sys.argv
        asyncio.run(generate(addr, int(count), Path(ca), prefix))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500, help="idle clients per instance")
    parser.add_argument("--instances", type=int, default=1, help="control instances (more than 1: behind Redis)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of idle measurement")
    args = parser.parse_args()
    print(f"idle clients per instance: {args.clients}; measured over {args.window:g} s idle; "
          f"{os.cpu_count()} CPUs, shared")
    print("| instances | process | clients held | names seen | CPU (of one core) | RSS | RSS per client | "
          "load generator CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in run(args.clients, args.instances, args.window):
        print(row)


if __name__ == "__main__":
    main()

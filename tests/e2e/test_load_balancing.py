"""Load balancing over three real destination processes announcing one name: the spread of
new connections under each lb-policy (printed as a table; the numbers are in
docs/load-balancing.md), a destination whose service cannot be reached within its
dial-timeout, and one killed mid-run under lb-retry = "all" (no failed request). Every
exchange is checked by its SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import urllib.request
from collections import Counter
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from support.cluster import TOKENS, ServerInfo, start_server
from support.daemons import Daemon, Daemons
from support.lbcluster import named_echo, start_client

POLICIES = ["none", "least-latency", "least-conns", "round-robin", "random"]
LABELS = [b"dst-1", b"dst-2", b"dst-3"]
HELD = 30  # connections opened (and held open) per policy


@contextmanager
def unreachable_service() -> Iterator[int]:
    """A port whose accept queue is full: a dial to it gets no answer (SYNs are dropped), as
    from a service that hangs. Loopback only."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        while True:  # fill the queue until a connect is not answered
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except (TimeoutError, OSError):
                break
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def status(daemon: Daemon) -> dict:
    host, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        return json.loads(response.read())


def wait_destinations(src: Daemon, names: list[str], count: int, timeout: float = 30.0) -> None:
    """Until every source in ``names`` sees ``count`` destinations with a direct path up."""
    deadline = time.monotonic() + timeout
    while True:
        report = status(src)
        ready = {e["name"]: sum(1 for p in e["peers"] if any(x["kind"] == "direct" for x in p["paths"]))
                 for e in report["endpoints"]}
        if all(ready.get(n) == count for n in names):
            return
        assert time.monotonic() < deadline, f"destinations not all up: {ready}"
        time.sleep(0.2)  # polling the status endpoint


def source_ports(src: Daemon, names: list[str]) -> dict[str, int]:
    report = status(src)
    return {e["name"]: int(e["addr"].rsplit(":", 1)[1]) for e in report["endpoints"] if e["name"] in names}


async def held_exchange(port: int, payload: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    """Connect through the source, send ``payload``, read the service's label and the echo
    (checked), and keep the connection open: which destination served it, and its writer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    label = (await reader.readline()).strip()
    echoed = await reader.readexactly(len(payload))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    return label, writer


async def exchange(port: int, payload: bytes) -> bytes:
    """One whole connection: the label of the destination that served it (echo checked)."""
    label, writer = await held_exchange(port, payload)
    writer.close()
    return label


def table(rows: dict[str, Counter]) -> str:
    lines = [f"{'lb-policy':<15}" + "".join(f"{label.decode():>8}" for label in LABELS)]
    for policy, counts in rows.items():
        lines.append(f"{policy:<15}" + "".join(f"{counts[label]:>8}" for label in LABELS))
    return "\n".join(lines)


def start_cluster(daemons: Daemons, certs: Path, services: list[dict[str, int | tuple[int, str]]],
                  sources: str) -> tuple[ServerInfo, list[Daemon], Daemon]:
    """A server, a destination client per ``services`` entry (name -> port, or (port,
    route)), and one source client with ``sources`` (its status endpoint on)."""
    server = start_server(daemons, certs)
    dsts = []
    for index, by_name in enumerate(services):
        body = ""
        for name, target in by_name.items():
            port, route = target if isinstance(target, tuple) else (target, "any")
            body += (f'[client.destinations.{name}]\naddr = "127.0.0.1:{port}"\nroute = "{route}"\n'
                     'dial-timeout = "300ms"\n')
        dsts.append(start_client(daemons, server, f"dst{index + 1}", TOKENS[0], body))
    src = start_client(daemons, server, "src", TOKENS[1], sources, status_addr="127.0.0.1:0")
    return server, dsts, src


async def test_spread_per_policy_and_a_destination_that_cannot_dial(daemons: Daemons, certs: Path) -> None:
    names = [f"lb-{policy}" for policy in POLICIES]
    sources = "".join(
        f'[client.sources.lb-{policy}]\naddr = "127.0.0.1:0"\nlb-policy = "{policy}"\n'
        + ('lb-retry = "all"\n' if policy != "none" else "") for policy in POLICIES
    ) + '[client.sources.slow]\naddr = "127.0.0.1:0"\nlb-policy = "round-robin"\nlb-retry = "all"\n' \
      + '[client.sources.routes]\naddr = "127.0.0.1:0"\nroute = "direct"\nlb-policy = "round-robin"\n'
    async with AsyncExitStack() as stack:
        echoes = [await stack.enter_async_context(named_echo(label)) for label in LABELS]
        hanging = stack.enter_context(unreachable_service())
        # "routes": dst-3 allows only the relay, the source only direct: dst-3 is no candidate
        services: list[dict[str, int | tuple[int, str]]] = [
            {**{n: echoes[i] for n in names}, "slow": hanging if i == 2 else echoes[i],
             "routes": (echoes[i], "relay" if i == 2 else "any")} for i in range(3)]
        _, _, src = start_cluster(daemons, certs, services, sources)
        # (the status lists dst-3's direct path under "routes" too: it is one connection per peer)
        wait_destinations(src, [*names, "slow", "routes"], 3)
        ports = source_ports(src, [*names, "slow", "routes"])

        rows: dict[str, Counter] = {}
        for policy, name in zip(POLICIES, names):
            writers = []
            counts: Counter = Counter()
            for index in range(HELD):
                label, writer = await held_exchange(ports[name], os.urandom(4096 + index))
                counts[label] += 1
                writers.append(writer)
            for writer in writers:
                writer.close()
            rows[policy] = counts
        print("\nnew connections per destination, 30 held open at once per policy:\n" + table(rows))
        assert all(sum(c.values()) == HELD for c in rows.values())
        assert [rows["round-robin"][label] for label in LABELS] == [10, 10, 10]
        assert [rows["least-conns"][label] for label in LABELS] == [10, 10, 10]
        assert all(rows["random"][label] > 0 for label in LABELS)

        # dst-3's service hangs: its destination refuses after its dial-timeout (300 ms) and
        # the source moves on; nothing fails, nothing is served by dst-3
        started = time.monotonic()
        slow = Counter([await exchange(ports["slow"], os.urandom(2048)) for _ in range(12)])
        took = time.monotonic() - started
        print(f"slow destination: {dict(slow)} in {took:.2f} s for 12 connections")
        assert slow[b"dst-3"] == 0 and sum(slow.values()) == 12
        assert "cannot connect to" in daemons.started[3].log()  # dst3 (after the server) refused

        # route policies hold per destination: round-robin over the two it may reach
        routed = Counter([await exchange(ports["routes"], os.urandom(1024)) for _ in range(10)])
        print(f"routes (dst-3 relay-only, source direct-only): {dict(routed)}")
        assert routed == Counter({b"dst-1": 5, b"dst-2": 5})


async def test_a_destination_killed_mid_run_fails_no_request(daemons: Daemons, certs: Path) -> None:
    sources = ('[client.sources.web]\naddr = "127.0.0.1:0"\nlb-policy = "round-robin"\nlb-retry = "all"\n'
               'dial-timeout = "2s"\n')
    async with AsyncExitStack() as stack:
        echoes = [await stack.enter_async_context(named_echo(label)) for label in LABELS]
        _, dsts, src = start_cluster(daemons, certs, [{"web": port} for port in echoes], sources)
        wait_destinations(src, ["web"], 3)
        port = source_ports(src, ["web"])["web"]
        served: list[bytes] = []
        durations: list[float] = []
        killed_at = 0.0
        for index in range(45):
            if index == 15:
                dsts[1].kill()  # SIGKILL: no goodbye to anyone
                killed_at = time.monotonic()
            started = time.monotonic()
            served.append(await exchange(port, os.urandom(8192 + index)))
            durations.append(time.monotonic() - started)
        after = served[15:]
        last_tried = max((i for i, d in enumerate(durations[15:]) if d > 1.0), default=None)
        print(f"\nkilled dst-2 after 15 connections: before {dict(Counter(served[:15]))}, "
              f"after {dict(Counter(after))}; slowest connection after the kill {max(durations[15:]):.2f} s; "
              f"{time.monotonic() - killed_at:.1f} s for the 30 after it; last one delayed by the dead "
              f"destination: #{last_tried}")
        assert len(served) == 45  # every exchange completed, its echo checked
        assert Counter(served[:15]) == Counter({label: 5 for label in LABELS})
        assert b"dst-2" not in after and {b"dst-1", b"dst-3"} <= set(after)

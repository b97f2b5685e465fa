"""iperf3 -u at a fixed rate through a UDP tunnel (its control connection through a TCP
tunnel on the same port number), direct and relayed: it completes and reports its loss."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from support.cluster import TOKENS, ServerInfo, start_server
from support.daemons import Daemons
from support.programs import need_program
from support.udp import free_port_both, status, udp_endpoint

RATE = "8M"  # bits per second: modest, the machine is shared
LENGTH = 1200  # bytes per datagram


def start_pair_client(daemons: Daemons, server: ServerInfo, name: str, token: str, table: str, port: int,
                      route: str, status_addr: bool = False):  # type: ignore[no-untyped-def]
    config = daemons.workdir / f"{name}.toml"
    config.write_text(
        f'[client.{table}.iperf-control]\naddr = "127.0.0.1:{port}"\nroute = "{route}"\n'
        f'[client.{table}.iperf-data]\naddr = "127.0.0.1:{port}"\nroute = "{route}"\nprotocol = "udp"\n'
    )
    args = [*server.client_args(token), "--config", str(config)]
    if status_addr:
        args += ["--status-addr", "127.0.0.1:0"]
    return daemons.start(name, args)


def wait_settled_path(src, name: str, kind: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Until the source's status shows one path of ``kind`` for ``name`` and no duplicate
    direct connection still draining (iperf3's control connection must not be opened on
    one that is about to close)."""
    deadline = time.monotonic() + timeout
    paths: list = []
    while time.monotonic() < deadline:
        peers = udp_endpoint(status(src), name, "source")["peers"]
        paths = [p for peer in peers for p in peer["paths"]]
        if [p["kind"] for p in paths] == [kind] and not any(p.get("draining") for p in paths):
            return
        time.sleep(0.1)  # the next look at the status
    raise AssertionError(f"no settled {kind} path for {name!r}: {paths}")


@pytest.mark.parametrize("route", ["direct", "relay"])
def test_iperf3_udp_through_the_tunnel_reports_its_loss(daemons, certs, tmp_path: Path, transport: str,
                                                         route: str) -> None:
    iperf3 = need_program("iperf3")
    server = start_server(daemons, certs)
    service_port, source_port = free_port_both(), free_port_both()
    iperf_server = subprocess.Popen([iperf3, "-s", "-B", "127.0.0.1", "-p", str(service_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dst = start_pair_client(daemons, server, "dst", TOKENS[0], "destinations", service_port, route)
        src = start_pair_client(daemons, server, "src", TOKENS[1], "sources", source_port, route, status_addr=True)
        # the destination's end of the path too: a relay refuses a stream for a destination
        # that has not connected to it yet
        dst.wait_for("relay .* connected" if route == "relay" else "peer .* connected direct")
        wait_settled_path(src, "iperf-control", route)
        run = subprocess.run([iperf3, "-c", "127.0.0.1", "-p", str(source_port), "-u", "-b", RATE, "-l", str(LENGTH),
                              "-t", "3", "--json"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    finally:
        iperf_server.kill()
        iperf_server.wait(10)
    report = json.loads(run.stdout)
    assert "sum" in report["end"], report.get("error", run.stdout[-3000:])
    result = report["end"]["sum"]
    print(f"iperf3 -u -b {RATE} -l {LENGTH} ({route}, {transport}): {result['packets']} datagrams, "
          f"{result['lost_packets']} lost ({result['lost_percent']:.2f} %), jitter {result['jitter_ms']:.3f} ms")
    assert result["packets"] > 1000
    assert result["lost_percent"] < 20, result
    udp = udp_endpoint(status(src), "iperf-data", "source")["udp"]
    assert udp["datagrams_to_tunnel"] >= result["packets"]

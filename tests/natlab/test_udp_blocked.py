"""Clients behind a router that drops all UDP (preset ``udp-blocked``, docs/udp-blocked.md):
they reach control and the relay over TLS-over-TCP, their peers keep UDP.

Which legs run over TCP is read from the clients' status JSON; the payload's path from the
relay's counters (its UDP and TCP ports) and the client-to-client counter; the bytes are
checked by the echo's checksum. The time to the first echoed byte (from the source's launch,
UDP fallback included) is printed."""

from __future__ import annotations

import json
import sys
import time

import pytest

from natlab.checks import MIB, assert_relayed, transfer
from natlab.lab import CONTROL_TCP_PORT, SERVER_IP, UDP_BLOCKED, Client, Host, Lab, sh

pytestmark = [pytest.mark.natlab]

TCP_KEYS = f'server-tcp-addr = "{SERVER_IP}:{CONTROL_TCP_PORT}"\n'
STATUS = 'status-addr = "127.0.0.1:0"\n'
FIRST_BYTE_DEADLINE = 30.0  # UDP_FALLBACK_AFTER per leg, twice, plus the handshakes: seconds


def status(client: Client) -> dict:
    """GET / on the client's status endpoint, from inside its namespace."""
    _, port = client.daemon.listening("status", "tcp")
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).read().decode())"
    return json.loads(sh(sys.executable, "-c", code, ns=client.host.ns))


def carriers(report: dict) -> tuple[str | None, list[str]]:
    """(the control leg's carrier, the carriers of the relay paths)."""
    relays = [p["carrier"] for e in report["endpoints"] for peer in e["peers"] for p in peer["paths"]
              if p["kind"] == "relay"]
    return report["control"]["carrier"], relays


def run_blocked_source(lab: Lab, dst_preset: str, udp: str) -> float:
    lab.start_server()
    src_host: Host = lab.add_site(UDP_BLOCKED, "198.51.100").hosts[0]
    dst_host: Host = lab.add_site(dst_preset, "192.0.2").hosts[0]
    lab.start_echo(dst_host)
    destination = lab.start_client("destination", dst_host, extra=STATUS)
    destination.daemon.wait_for(r"relay \S+ connected", 20)
    started = time.monotonic()
    source = lab.start_client("source", src_host, extra=TCP_KEYS + STATUS + f'udp = "{udp}"\n')
    source.daemon.listening("source", "tcp")
    probe = lab.probe(src_host, deadline=FIRST_BYTE_DEADLINE)
    first_byte = time.monotonic() - started
    assert probe["ok"], f"no tunnel from behind {UDP_BLOCKED} (udp = {udp!r}): {probe}"
    delta = transfer(lab, src_host, MIB)
    assert_relayed(delta, MIB)
    assert carriers(status(source)) == ("tcp", ["tcp"]), "the blocked client's legs run over TCP"
    assert carriers(status(destination)) == ("udp", ["udp"]), "its peer keeps UDP"
    print(f"{UDP_BLOCKED} -> {dst_preset} (udp = {udp}): relayed over TCP; first byte {first_byte:.2f} s after launch")
    return first_byte


# The udp-blocked row of the grid (udp = "auto") is in test_grid.py.


def test_udp_never_skips_the_udp_wait(lab: Lab) -> None:
    run_blocked_source(lab, "none", "never")

"""Port mapping in the NAT lab: a client behind a ``hard`` NAT whose router runs miniupnpd
(natlab/portmap_lab.py) asks for a mapping and is then reachable directly; the router's own
table holds the mapping while the client runs and loses it when the client exits; a router
that answers nothing delays nothing."""

from __future__ import annotations

import json
import sys

import pytest

from natlab.lab import DIRECT_PORT, Lab, build_pair, sh
from natlab.portmap_lab import MAPPING_CELLS, mapped_ports
from natlab.test_grid import run_cell
from support.programs import need_program

pytestmark = [pytest.mark.natlab]

# (source, destination): each needs the mapping to be direct (hard x hard, hard x easy are
# relayed without it, see test_grid.py)
CELLS = [pytest.param(s, d, id=f"{s}-{d}") for s, d in MAPPING_CELLS]
STATUS_PORT = 7080


@pytest.mark.parametrize(("src", "dst"), CELLS)
def test_hard_behind_a_mapping_router_is_direct(lab: Lab, src: str, dst: str) -> None:
    print(f"{src} -> {dst}: {run_cell(lab, src, dst, 'direct')}")


def _status(lab: Lab, ns: str) -> dict:
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{STATUS_PORT}/', timeout=5).read().decode())"
    return json.loads(sh(sys.executable, "-c", fetch, ns=ns))


@pytest.mark.parametrize(("preset", "protocol"), [("hard-map", "pcp"), ("hard-igd", "upnp")])
def test_router_table_holds_the_mapping_until_the_client_exits(lab: Lab, preset: str, protocol: str) -> None:
    need_program("upnpc")
    lab.start_server()
    site = lab.add_site(preset, "198.51.100")
    host = site.hosts[0]
    assert site.router is not None
    assert mapped_ports(lab, site.router) == []
    client = lab.start_client("destination", host, extra=f'status-addr = "127.0.0.1:{STATUS_PORT}"\n')
    # the log line says when to look; the router's table and the status are the evidence
    match = client.daemon.wait_for(rf"port mapping: {protocol} maps (\S+):(\d+) to UDP port {DIRECT_PORT}", 20)
    external_port = int(match.group(2))
    assert mapped_ports(lab, site.router) == [(external_port, host.addr, DIRECT_PORT)]
    listing = sh("upnpc", "-i", "-l", ns=host.ns, timeout=30)
    assert f"UDP {external_port}->{host.addr}:{DIRECT_PORT}" in listing, listing
    status = _status(lab, host.ns)["port_mapping"]
    assert status["protocol"] == protocol
    assert status["external_addr"] == f"{site.public_ip}:{external_port}"
    assert 0 < status["expires_in"] <= status["lifetime"]
    assert client.daemon.stop() == 0
    assert mapped_ports(lab, site.router) == [], "the mapping outlived the client"
    assert f"UDP {external_port}->" not in sh("upnpc", "-i", "-l", ns=host.ns, timeout=30)


def test_a_router_that_answers_nothing_delays_nothing(lab: Lab) -> None:
    """Both routers drop PCP/NAT-PMP and SSDP silently (no ICMP either): the pair still goes
    direct as soon as without port mapping, and the mapping's give-up comes later, at debug."""
    lab.start_server()
    src = lab.add_site("easy", "198.51.100")
    dst = lab.add_site("easy", "192.0.2")
    for site in (src, dst):
        sh("nft", "add", "counter", "ip", "filter", "mapping_asks", ns=site.router)
        sh("nft", "insert", "rule", "ip", "filter", "input", "udp", "dport", "{ 5351, 1900 }",
           "counter", "name", "mapping_asks", "drop", ns=site.router)
    lab.start_echo(dst.hosts[0])
    destination = lab.start_client("destination", dst.hosts[0])
    source = lab.start_client("source", src.hosts[0])
    source.daemon.listening("source", "tcp")
    source.daemon.wait_for(r"peer \S+ connected direct via", 20)
    assert lab.probe(src.hosts[0], deadline=15.0)["ok"]
    for client in (source, destination):
        client.daemon.wait_for(r"port mapping: none", 20)
        direct = client.daemon.first_time(r"peer \S+ connected direct via")
        control = client.daemon.first_time(r"connected to control server")
        gave_up = client.daemon.first_time(r"port mapping: none")
        assert control is not None and direct is not None and gave_up is not None
        assert control < gave_up and direct < gave_up, f"{client.role}: something waited for the router"
        assert client.daemon.count(r"INFO .*port mapping|WARN.*port mapping") == 0
    for site in (src, dst):
        data = json.loads(sh("nft", "-j", "list", "counter", "ip", "filter", "mapping_asks", ns=site.router))
        asked = next(int(i["counter"]["packets"]) for i in data["nftables"] if "counter" in i)
        assert asked > 0, "the client did not ask its router at all"

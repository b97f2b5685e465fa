"""UDP tunnels (docs/udp.md) between real `connet` processes, with real UDP programs:
dnsmasq answering dig through a direct and a relayed tunnel, a 1400-byte echo, hundreds of
senders each answered, the protocol mismatch refused on both sides."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from support.cluster import start_server
from test_status import load_schema, validate
from support.udp import (
    dig,
    dnsmasq,
    metrics,
    sha256,
    start_udp_destination,
    start_udp_source,
    status,
    udp_echo_server,
    udp_endpoint,
    udp_roundtrip,
    wait_udp_tunnel,
)

LOCAL = "127.0.0.1:0"


@pytest.mark.parametrize("route", ["direct", "relay"])
def test_dig_through_the_tunnel(daemons, certs, tmp_path: Path, transport: str, route: str) -> None:
    """dnsmasq behind the destination answers dig at the source, over the route asked for."""
    server = start_server(daemons, certs)
    with dnsmasq(tmp_path) as dns_port:
        dst = start_udp_destination(daemons, server, dns_port, route=route, status_addr=LOCAL)
        src, source_port = start_udp_source(daemons, server, route=route, status_addr=LOCAL)
        src.wait_for("peer .* matched for source 'dns'")
        answer = dig(source_port)
    assert answer == "10.1.2.3", src.log()
    whole = status(src)
    schema = load_schema("client.json")
    validate(whole, schema, schema)  # docs/schemas/client.json, udp part included
    report = udp_endpoint(whole, "dns", "source")
    assert report["protocol"] == "udp"
    assert report["udp"]["flows_total"] >= 1 and report["udp"]["datagrams_from_tunnel"] >= 1
    assert report["peers"][0]["paths"][0]["kind"] == route
    served = udp_endpoint(status(dst), "dns", "destination")["udp"]
    assert served["datagrams_from_tunnel"] >= 1 and served["datagrams_to_tunnel"] >= 1
    exposition = metrics(src)
    assert 'connet_client_udp_datagrams_total{name="dns",role="source",direction="from_tunnel"}' in exposition
    assert 'connet_client_udp_drops_total{name="dns",role="source",cause="too_large"} 0' in exposition


@pytest.mark.parametrize("route", ["direct", "relay"])
async def test_1400_byte_datagrams_echo_whole(daemons, certs, transport: str, route: str) -> None:
    """WireGuard and OpenVPN send 1400-byte datagrams: each comes back whole (checksums),
    direct and relayed; one larger than the path carries is dropped and counted."""
    server = start_server(daemons, certs)
    async with udp_echo_server() as echo_port:
        start_udp_destination(daemons, server, echo_port, endpoint="vpn", route=route)
        src, source_port = start_udp_source(daemons, server, endpoint="vpn", route=route, status_addr=LOCAL)
        await asyncio.to_thread(wait_udp_tunnel, source_port)
        for _ in range(20):
            payload = os.urandom(1400)
            back = await asyncio.to_thread(udp_roundtrip, source_port, payload)
            assert back is not None and sha256(back) == sha256(payload)
        too_large = await asyncio.to_thread(udp_roundtrip, source_port, os.urandom(1500), timeout=0.3, tries=2)
    assert too_large is None
    drops = udp_endpoint(status(src), "vpn", "source")["udp"]["drops"]
    assert drops["too_large"] == 2


async def test_hundreds_of_senders_each_get_their_own_answers(daemons, certs) -> None:
    """300 sockets send at once; each gets back exactly what it sent (its own flow)."""
    server = start_server(daemons, certs)
    senders = 300
    async with udp_echo_server() as echo_port:
        start_udp_destination(daemons, server, echo_port, endpoint="game")
        src, source_port = start_udp_source(daemons, server, endpoint="game", status_addr=LOCAL)
        await asyncio.to_thread(wait_udp_tunnel, source_port)
        loop = asyncio.get_running_loop()

        async def one(index: int) -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect(("127.0.0.1", source_port))
                mine = f"sender {index} ".encode() + os.urandom(16)
                for _ in range(20):
                    await loop.sock_sendall(sock, mine)
                    try:
                        got = await asyncio.wait_for(loop.sock_recv(sock, 2048), 1.0)
                    except TimeoutError:
                        continue
                    return got == mine
                return False

        results = await asyncio.gather(*(one(i) for i in range(senders)))
    assert all(results), f"{results.count(False)} of {senders} senders got no or a wrong answer"
    udp = udp_endpoint(status(src), "game", "source")["udp"]
    assert udp["flows_total"] >= senders + 1


async def test_tcp_source_and_udp_destination_do_not_match(daemons, certs) -> None:
    """A TCP source asking a UDP destination of the same name is refused, one line each side."""
    server = start_server(daemons, certs)
    async with udp_echo_server() as echo_port:
        dst = start_udp_destination(daemons, server, echo_port, endpoint="dns", route="direct")
        src, source_port = start_udp_source(daemons, server, endpoint="dns", protocol="tcp", route="direct")
        src.wait_for("peer .* connected direct")
        dst.wait_for("peer .* connected direct")
        reader, writer = await asyncio.open_connection("127.0.0.1", source_port)
        writer.write(b"hello")
        try:
            data = await asyncio.wait_for(reader.read(), 15)
        except ConnectionError:
            data = b""
        writer.close()
    assert data == b""
    dst.wait_for(r"refused: a tcp source asked for the udp destination 'dns'")
    src.wait_for(r"refused: protocol-mismatch")


def wait_status(daemon, check, timeout: float = 15.0) -> dict:  # type: ignore[no-untyped-def]
    """Until ``check(status)`` holds (polling the status endpoint), or fail with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        report = status(daemon)
        if check(report):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"status never satisfied the check: {report}")
        time.sleep(0.1)  # the next look at the status


async def test_flows_idle_out_and_are_capped(daemons, certs) -> None:
    """udp-max-flows 2: a third sender is dropped (flows_full); udp-idle-timeout 1: both
    flows end at both clients once quiet, and the third sender then gets its own."""
    server = start_server(daemons, certs)
    async with udp_echo_server() as echo_port:
        dst = start_udp_destination(daemons, server, echo_port, endpoint="game", status_addr=LOCAL)
        src, source_port = start_udp_source(daemons, server, endpoint="game", status_addr=LOCAL,
                                             extra=("--src-udp-max-flows", "2", "--src-udp-idle-timeout", "1"))
        await asyncio.to_thread(wait_udp_tunnel, source_port)  # flow 1 (then idle)
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for sock in socks:
                sock.settimeout(1.0)
            first, second, third = socks
            wait_status(src, lambda r: udp_endpoint(r, "game", "source")["udp"]["flows"] == 0)
            for sock in (first, second):
                assert await asyncio.to_thread(roundtrip_on, sock, source_port, b"mine") == b"mine"
            assert await asyncio.to_thread(roundtrip_on, third, source_port, b"third", 1) is None
            drops = udp_endpoint(status(src), "game", "source")["udp"]["drops"]
            assert drops["flows_full"] >= 1
            wait_status(src, lambda r: udp_endpoint(r, "game", "source")["udp"]["flows"] == 0)
            wait_status(dst, lambda r: udp_endpoint(r, "game", "destination")["udp"]["flows"] == 0)
            assert await asyncio.to_thread(roundtrip_on, third, source_port, b"third") == b"third"
        finally:
            for sock in socks:
                sock.close()


def roundtrip_on(sock: socket.socket, port: int, payload: bytes, tries: int = 10) -> bytes | None:
    for _ in range(tries):
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            return sock.recvfrom(65536)[0]
        except TimeoutError:
            continue
    return None


async def test_no_common_route_drops_and_counts(daemons, certs) -> None:
    """Routes apply as for TCP: a direct-only source and a relay-only destination share no
    route; the sender gets nothing and the drops say no_path."""
    server = start_server(daemons, certs)
    async with udp_echo_server() as echo_port:
        start_udp_destination(daemons, server, echo_port, endpoint="dns", route="relay")
        src, source_port = start_udp_source(daemons, server, endpoint="dns", route="direct", status_addr=LOCAL)
        src.wait_for("peer .* matched for source 'dns'")
        assert await asyncio.to_thread(udp_roundtrip, source_port, b"hello", timeout=0.5, tries=2) is None
    src.wait_for("no route: the source allows direct, the destination allows relay")
    assert udp_endpoint(status(src), "dns", "source")["udp"]["drops"]["no_path"] >= 1

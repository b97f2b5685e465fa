"""The port-mapping keeper (connet_core/portmap) against a router on loopback that speaks
PCP, or only NAT-PMP, or nothing: real UDP, the answers built from the RFC layouts."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest

from connet_core.portmap import mapper as mapper_module
from connet_core.portmap.gateway import parse_route_table
from connet_core.portmap.mapper import PortMapper

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
EXTERNAL = ipaddress.IPv4Address("203.0.113.77")

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0164A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
"""


def test_gateway_is_the_default_route_with_the_lowest_metric() -> None:
    assert parse_route_table(ROUTES) == ipaddress.IPv4Address("192.0.2.1")
    assert parse_route_table(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[1]) is None
    assert parse_route_table("") is None


class Router(asyncio.DatagramProtocol):
    """Answers PCP MAP (unless ``pcp`` is False: then as a NAT-PMP-only router does) and
    NAT-PMP; keeps the table of mappings, as a router would."""

    def __init__(self, pcp: bool = True, grant: int | None = None) -> None:
        self.pcp = pcp
        self.grant = grant  # the longest lease this router grants
        self.table: dict[int, int] = {}  # internal port -> external port
        self.requests: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[0] == 2:
            self.requests.append("pcp")
            if not self.pcp:
                self.transport.sendto(struct.pack("!BBHI", 0, 129, 1, 0) + bytes(8), addr)  # type: ignore[attr-defined]
                return
            lifetime = self._granted(struct.unpack_from("!I", data, 4)[0])
            nonce, internal = data[24:36], struct.unpack_from("!H", data, 40)[0]
            external = self._update(internal, lifetime)
            answer = (struct.pack("!BBBBII", 2, 0x81, 0, 0, lifetime, 1) + bytes(12) + nonce
                      + struct.pack("!B3xHH", 17, internal, external) + b"\0" * 10 + b"\xff\xff" + EXTERNAL.packed)
        elif data[:2] == b"\0\0":
            self.requests.append("nat-pmp address")
            answer = struct.pack("!BBHI", 0, 128, 0, 1) + EXTERNAL.packed
        else:
            self.requests.append("nat-pmp map")
            _, _, _, internal, _, lifetime = struct.unpack("!BBHHHI", data)
            lifetime = self._granted(lifetime)
            external = self._update(internal, lifetime)
            answer = struct.pack("!BBHIHHI", 0, 129, 0, 1, internal, external, lifetime)
        self.transport.sendto(answer, addr)  # type: ignore[attr-defined]

    def _granted(self, asked: int) -> int:
        return asked if self.grant is None or asked == 0 else min(asked, self.grant)

    def _update(self, internal: int, lifetime: int) -> int:
        if lifetime == 0:
            self.table.pop(internal, None)
            return 0
        return self.table.setdefault(internal, 40000 + len(self.table))


async def run_router(router: asyncio.DatagramProtocol) -> tuple[asyncio.DatagramTransport, int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: router, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]  # type: ignore[return-value]


async def keep(router: Router, **kwargs: object) -> tuple[PortMapper, asyncio.Event, asyncio.Task]:
    transport, port = await run_router(router)
    changed = asyncio.Event()
    mapper = PortMapper(19192, changed.set, gateway=lambda: LOOPBACK, server_port=port, upnp_enabled=False, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(mapper.run())
    task.add_done_callback(lambda _: transport.close())
    return mapper, changed, task


@pytest.mark.parametrize(("speaks_pcp", "protocol"), [(True, "pcp"), (False, "nat-pmp")])
async def test_mapping_is_made_and_deleted_on_exit(speaks_pcp: bool, protocol: str) -> None:
    router = Router(pcp=speaks_pcp)
    mapper, changed, task = await keep(router)
    await asyncio.wait_for(changed.wait(), 5)
    assert mapper.current is not None
    assert mapper.current.protocol == protocol
    assert str(mapper.current.external) == f"{EXTERNAL}:40000"
    assert router.table == {19192: 40000}
    status = mapper.current.status(mapper.current.obtained)
    assert status == {"protocol": protocol, "external_addr": f"{EXTERNAL}:40000", "lifetime": 7200, "expires_in": 7200.0}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert router.table == {}, "the mapping must be deleted when the client stops"


async def test_renewal_before_the_lease_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapper_module, "MIN_RENEW", 0.05)  # (30 s in use: no lease is that short)
    router = Router(grant=1)  # renewed at half of it: every 0.5 s
    mapper, changed, task = await keep(router)
    await asyncio.wait_for(changed.wait(), 5)
    assert mapper.current is not None and mapper.current.lifetime == 1
    changed.clear()
    while router.requests.count("pcp") < 3:  # the first MAP and two renewals
        await asyncio.sleep(0.05)
    assert not changed.is_set(), "a renewal that keeps the address is no news for control"
    assert router.table == {19192: 40000}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(router.requests) == {"pcp"} and router.table == {}  # renewals, then the delete


class Silent(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1


async def test_a_silent_router_gives_no_mapping_and_an_error() -> None:
    silent = Silent()
    transport, port = await run_router(silent)
    try:
        mapper = PortMapper(19192, lambda: None, gateway=lambda: LOOPBACK, server_port=port, upnp_enabled=False)
        assert await mapper._obtain(LOOPBACK) is None
        assert "did not answer" in (mapper.last_error or "")
        assert silent.received == 2 * len(mapper_module.RETRANSMIT)  # PCP, then NAT-PMP, each retransmitted
    finally:
        transport.close()


async def test_no_gateway_no_packets() -> None:
    mapper = PortMapper(19192, lambda: None, gateway=lambda: None)
    await asyncio.wait_for(mapper.run(), 1)
    assert mapper.current is None

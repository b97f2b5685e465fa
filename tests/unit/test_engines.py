"""The engines (control, client, relay) over the in-memory transport: fast, no UDP.

TCP on the two ends of a tunnel is real loopback TCP; only QUIC is replaced."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

from connet_core.certs import write_test_certificates
from connet_core.client import Client
from connet_core.config import (
    ClientSettings,
    CommonSettings,
    ControlSettings,
    EndpointSettings,
    ServerSettings,
)
from connet_core.model import HostPort, Role, RoutePolicy
from connet_core.plugins import load_hooks
from connet_core.server import Server
from connet_core.testing import MemoryNetwork, memory_transport_plugin
from support.services import echo_server, exchange, sha256

COMMON = CommonSettings(transport="memory")
LOCAL = HostPort("127.0.0.1", 0)


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
def hooks(network: MemoryNetwork):
    # connet server's tokens: the tokens plugin's [server] keys
    return load_hooks(extra_plugins=[memory_transport_plugin(network)],
                      plugin_settings={"tokens": {"tokens": ("t-dst", "t-src")}})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


def server_settings(certs: dict[str, Path], store: Path) -> ServerSettings:
    control = ControlSettings(
        cert_file=certs["cert"], key_file=certs["key"],
        addr=LOCAL, store_dir=store, common=COMMON,
    )
    return ServerSettings(control=control, relay_addr=LOCAL, relay_hostname="127.0.0.1", common=COMMON)


def client_settings(certs, control_addr: HostPort, token: str, *, dst: tuple[str, int, RoutePolicy] | None = None,
                    src: tuple[str, RoutePolicy] | None = None) -> ClientSettings:
    destinations = (EndpointSettings(dst[0], Role.DESTINATION, HostPort("127.0.0.1", dst[1]), dst[2]),) if dst else ()
    sources = (EndpointSettings(src[0], Role.SOURCE, LOCAL, src[1]),) if src else ()
    return ClientSettings(
        token=token, server_addr=control_addr, server_cas=certs["ca"], server_name="127.0.0.1",
        direct_addr=LOCAL, destinations=destinations, sources=sources, common=COMMON,
    )


@asynccontextmanager
async def running(*components) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for component in components:
            tasks.append(tg.create_task(component.run()))
            await asyncio.wait_for(component.started.wait(), 5)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


async def through(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Retry until the tunnel is up (refusals are quick), then exchange ``payload``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await exchange(port, payload)
        except (ConnectionError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "src_route, dst_route, expect_path",
    [
        (RoutePolicy.ANY, RoutePolicy.ANY, "direct"),
        (RoutePolicy.RELAY, RoutePolicy.ANY, "relay"),
        (RoutePolicy.ANY, RoutePolicy.RELAY, "relay"),
        (RoutePolicy.DIRECT, RoutePolicy.DIRECT, "direct"),
    ],
)
async def test_tunnel_over_memory_transport(hooks, certs, tmp_path, src_route, dst_route, expect_path) -> None:
    server = Server(server_settings(certs, tmp_path / "store"), hooks)
    async with echo_server() as echo_port, running(server):
        control_addr = server.control.endpoint.local_address
        dst = Client(client_settings(certs, control_addr, "t-dst", dst=("web", echo_port, dst_route)), hooks)
        src = Client(client_settings(certs, control_addr, "t-src", src=("web", src_route)), hooks)
        async with running(dst, src):
            payload = os.urandom(1 << 20)
            port = src.source_addresses["web"].port
            assert sha256(await through(port, payload)) == sha256(payload)
            relayed = server.relay.counters.streams_total
            if expect_path == "relay":
                assert relayed >= 1
                assert server.relay.counters.bytes_relayed >= 2 * len(payload)
            else:
                assert relayed == 0


async def test_no_common_route_refuses_and_says_why(hooks, certs, tmp_path, caplog) -> None:
    server = Server(server_settings(certs, tmp_path / "store"), hooks)
    async with echo_server() as echo_port, running(server):
        control_addr = server.control.endpoint.local_address
        dst = Client(client_settings(certs, control_addr, "t-dst", dst=("web", echo_port, RoutePolicy.RELAY)), hooks)
        src = Client(client_settings(certs, control_addr, "t-src", src=("web", RoutePolicy.DIRECT)), hooks)
        async with running(dst, src):
            port = src.source_addresses["web"].port
            # wait until the source knows its destination, then a connection is refused at once
            for _ in range(200):
                if src.matches.get(("web", Role.SOURCE)):
                    break
                await asyncio.sleep(0.02)
            with pytest.raises((ConnectionError, OSError, asyncio.IncompleteReadError)):
                reply = await exchange(port, b"hello")
                assert reply == b"", "a refused connection carries nothing"
                raise ConnectionResetError("closed without data")
    assert any("no route" in r.getMessage() for r in caplog.records)


async def test_wrong_token_is_refused(hooks, certs, tmp_path, caplog) -> None:
    server = Server(server_settings(certs, tmp_path / "store"), hooks)
    async with running(server):
        control_addr = server.control.endpoint.local_address
        client = Client(client_settings(certs, control_addr, "wrong", src=("web", RoutePolicy.ANY)), hooks)
        async with running(client):
            for _ in range(200):
                if any("refused the token" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
    assert any("refused the token" in r.getMessage() for r in caplog.records)
    assert not server.control.sessions

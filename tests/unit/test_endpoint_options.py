"""handshake-idle-timeout reaches every QUIC endpoint and dial of the engines; metadata
reaches control's status (per client) and the client's own; a PROXY header reaches the
service through a tunnel over the in-memory transport."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from connet_core.client import Client
from connet_core.client.report import client_status
from connet_core.model import HostPort, Role, RoutePolicy
from connet_core.server import Server
from connet_core.testing.network import MemoryEndpoint, MemoryTransport
from connet_core.config import EndpointSettings

from test_engines import certs, client_settings, hooks, network, running, server_settings  # noqa: F401

TIMEOUT = 7.5


async def test_handshake_idle_timeout_and_metadata(hooks, certs, tmp_path, monkeypatch) -> None:  # noqa: F811
    handshake_timeouts: list[float] = []
    dial_timeouts: list[float | None] = []
    bind, dial = MemoryTransport.bind, MemoryEndpoint.dial

    async def recording_bind(self, address, *, identity, alpns, options=None, **kw):
        handshake_timeouts.append(options.handshake_timeout)
        return await bind(self, address, identity=identity, alpns=alpns, options=options)

    async def recording_dial(self, address, *, alpn, trust, timeout=None):
        dial_timeouts.append(timeout)
        return await dial(self, address, alpn=alpn, trust=trust, timeout=timeout)

    monkeypatch.setattr(MemoryTransport, "bind", recording_bind)
    monkeypatch.setattr(MemoryEndpoint, "dial", recording_dial)
    settings = server_settings(certs, tmp_path / "store")
    settings = dataclasses.replace(settings, control=dataclasses.replace(settings.control,
                                                                         handshake_idle_timeout=TIMEOUT))
    server = Server(settings, hooks)
    async with running(server):
        control_addr = server.control.endpoint.local_address
        client = Client(dataclasses.replace(client_settings(certs, control_addr, "t-src", src=("web", RoutePolicy.ANY)),
                                            metadata="laptop", handshake_idle_timeout=TIMEOUT), hooks)
        async with running(client):
            for _ in range(200):
                if server.control.status()["clients"]:
                    break
                await asyncio.sleep(0.02)  # until control admitted the session
            (entry,) = server.control.status()["clients"]
            assert entry["metadata"] == "laptop"
            assert client_status(client.settings, client.state, client.endpoint)["metadata"] == "laptop"
    assert handshake_timeouts == [TIMEOUT] * 3  # control, the built-in relay, the client
    assert dial_timeouts and set(dial_timeouts) == {TIMEOUT}  # the client's dial of control


@pytest.mark.parametrize("route", [RoutePolicy.DIRECT, RoutePolicy.RELAY])
async def test_proxy_header_reaches_the_service(hooks, certs, tmp_path, route) -> None:  # noqa: F811
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if not received.done():
            received.set_result(line)
        writer.write(await reader.read(100))
        writer.close()

    service = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = service.sockets[0].getsockname()[1]
    server = Server(server_settings(certs, tmp_path / "store"), hooks)
    async with running(server):
        control_addr = server.control.endpoint.local_address
        dst_settings = client_settings(certs, control_addr, "t-dst")
        dst_settings = dataclasses.replace(dst_settings, destinations=(EndpointSettings(
            "web", Role.DESTINATION, HostPort("127.0.0.1", port), route, proxy_proto_version="v1"),))
        dst = Client(dst_settings, hooks)
        src = Client(client_settings(certs, control_addr, "t-src", src=("web", route)), hooks)
        async with running(dst, src):
            source_port = src.state.source_addresses["web"].port
            for _ in range(200):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", source_port)
                    origin = writer.get_extra_info("sockname")
                    writer.write(b"hi")
                    await writer.drain()
                    answer = await reader.read()
                    writer.close()
                    if answer == b"hi":
                        break
                except ConnectionError:
                    pass
                await asyncio.sleep(0.05)  # the tunnel is not up yet
            line = await asyncio.wait_for(received, 5)
    service.close()
    assert line == f"PROXY TCP4 127.0.0.1 127.0.0.1 {origin[1]} {source_port}\r\n".encode()


async def test_relay_metadata_reaches_control(hooks, certs, tmp_path) -> None:  # noqa: F811
    from connet_core.config import ControlSettings, RelaySettings
    from connet_core.control import Control
    from connet_core.plugins import Hooks
    from connet_core.relay import Relay
    from test_engines import COMMON, LOCAL

    # connet control's [control] keys of the tokens plugin
    control_hooks = Hooks(hooks.pm, {"tokens": {"client-tokens": ("t",), "relay-tokens": ("r",)}})
    control = Control(ControlSettings(
        cert_file=certs["cert"], key_file=certs["key"], accept_relays=True, addr=LOCAL,
        store_dir=tmp_path / "control", common=COMMON), control_hooks)
    async with running(control):
        relay = Relay(RelaySettings(token="r", addr=LOCAL, hostname="127.0.0.1",
                                    control_addr=control.endpoint.local_address, control_cas=certs["ca"],
                                    control_name="127.0.0.1", store_dir=tmp_path / "relay", metadata="edge-1",
                                    common=COMMON), hooks)
        async with running(relay):
            for _ in range(200):
                if control.status()["relays"]:
                    break
                await asyncio.sleep(0.02)  # until the relay registered
            assert [r["metadata"] for r in control.status()["relays"]] == ["edge-1"]
            assert relay.status()["metadata"] == "edge-1"


async def test_control_refuses_bad_metadata_and_keeps_serving(hooks, certs, tmp_path) -> None:  # noqa: F811
    server = Server(server_settings(certs, tmp_path / "store"), hooks)
    async with running(server):
        control_addr = server.control.endpoint.local_address
        # settings built by hand: configuration would refuse this, a modified client need not
        bad = Client(dataclasses.replace(client_settings(certs, control_addr, "t-src"), metadata="x\n" * 100), hooks)
        good = Client(dataclasses.replace(client_settings(certs, control_addr, "t-dst"), metadata="fine"), hooks)
        async with running(bad, good):
            for _ in range(200):
                if server.control.counters["handshake_failures"] and server.control.status()["clients"]:
                    break
                await asyncio.sleep(0.02)  # until both tried
            assert [c["metadata"] for c in server.control.status()["clients"]] == ["fine"]
            assert server.control.counters["handshake_failures"] >= 1

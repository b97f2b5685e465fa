"""A client whose session is lost comes back before control noticed (a new address, a dead
path): its new session presents the reconnect id of the earlier one, control closes that one
with ``replaced``, and the client's announcements pass from one session to the other without
news to its peers (docs/protocol.md). A reconnect id presented with another token is ignored.

A real :class:`connet_core.control.Control` over the in-memory transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connet_core.certs import write_test_certificates
from connet_core.config import CommonSettings, ControlSettings
from connet_core.control import Control
from connet_core.model import HostPort, Role
from connet_core.plugins import load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    Announce,
    Authenticate,
    Authenticated,
    PeersUpdate,
    RelaysUpdate,
)
from connet_core.protocol.streams import MessageStream
from connet_core.testing import MemoryNetwork, memory_transport_plugin
from connet_core.transport import Trust

TOKENS = ("tok-dst", "tok-src")
WAIT = 5.0
DST_CERT = b"certificate of the destination"


@pytest.fixture
async def control(tmp_path: Path):
    certs = write_test_certificates(tmp_path / "certs", ["127.0.0.1"])
    network = MemoryNetwork(default_rtt=0.0)
    settings = ControlSettings(cert_file=certs["cert"], key_file=certs["key"], addr=HostPort("127.0.0.1", 0),
                               store_dir=tmp_path / "store", common=CommonSettings(transport="memory"),
                               endpoint_expiry=30.0)
    hooks = load_hooks(extra_plugins=[memory_transport_plugin(network)], plugin_settings={"tokens": {"tokens": TOKENS}})
    engine = Control(settings, hooks)
    task = asyncio.create_task(engine.run())
    await asyncio.wait_for(engine.started.wait(), WAIT)
    transport = network.transport("memory")
    endpoints = []

    async def session(token: str, reconnect_id: bytes = b"") -> tuple[object, MessageStream, Authenticated]:
        endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=())
        endpoints.append(endpoint)
        conn = await endpoint.dial(engine.endpoint.local_address, alpn=ALPN_CONTROL,
                                   trust=Trust(server_name="127.0.0.1", cafile=certs["ca"]))
        messages = MessageStream(await conn.open_stream())
        await messages.send(Authenticate(token=token, reconnect_id=reconnect_id))
        return conn, messages, await messages.recv(Authenticated, timeout=WAIT)

    try:
        yield engine, session
    finally:
        for endpoint in endpoints:
            await endpoint.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _peers(messages: MessageStream) -> tuple[tuple[bytes, tuple[str, ...]], ...]:
    """The next PeersUpdate (relay updates pass by): each peer's certificate and addresses
    (control adds the address it observed to those announced)."""
    while not isinstance(update := await messages.recv((PeersUpdate, RelaysUpdate), timeout=WAIT), PeersUpdate):
        pass
    return tuple((peer.certificate, peer.addresses) for peer in update.peers)


async def test_a_new_session_with_the_reconnect_id_replaces_the_old_one_without_news(control) -> None:
    engine, session = control
    old_conn, old, hello = await session(TOKENS[0])
    await old.send(Announce("web", Role.DESTINATION.value, "any", DST_CERT, ("192.0.2.1:1",)))
    _, source, _ = await session(TOKENS[1])
    await source.send(Announce("web", Role.SOURCE.value, "any", b"certificate of the source"))
    ((cert, addresses),) = await _peers(source)
    assert cert == DST_CERT and "192.0.2.1:1" in addresses

    new_conn, new, _ = await session(TOKENS[0], reconnect_id=hello.reconnect_id)
    closed = await asyncio.wait_for(old_conn.wait_closed(), WAIT)
    assert closed.code == CloseCode.REPLACED
    await new.send(Announce("web", Role.DESTINATION.value, "any", DST_CERT, ("192.0.2.1:2",)))
    # the source hears the destination's new address, and never an empty or doubled list
    ((cert, addresses),) = await _peers(source)
    assert cert == DST_CERT and "192.0.2.1:2" in addresses and "192.0.2.1:1" not in addresses
    assert len(engine.sessions) == 2
    assert engine.status()["lingering_endpoints"] == 0


async def test_a_reconnect_id_with_another_token_replaces_nothing(control) -> None:
    engine, session = control
    old_conn, _, hello = await session(TOKENS[0])
    await session(TOKENS[1], reconnect_id=hello.reconnect_id)
    assert len(engine.sessions) == 2
    assert not old_conn.closed

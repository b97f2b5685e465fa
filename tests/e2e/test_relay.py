"""Relayed tunnels with ``connet control`` and ``connet relay`` as separate processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from connet_core.config import CommonSettings, RelaySettings
from connet_core.model import HostPort
from connet_core.plugins import load_hooks
from connet_core.relay import Relay
from support.cluster import RELAY_TOKEN, start_control, start_destination, start_source
from support.recording import RecordingPlugin
from support.services import echo_server, exchange, sha256, wait_tunnel


# 64 MiB through `connet control` + `connet relay` as separate processes, with the relay's
# own count of what it carried, runs per transport in test_transports.py.


async def test_relay_sees_only_ciphertext(daemons, certs, tmp_path: Path) -> None:
    """The relay runs in this process with a transport plugin that records every stream byte
    it handles: the payload never appears in it, though the tunnel delivered it intact."""
    control = start_control(daemons, certs)
    recorder = RecordingPlugin(load_hooks().transport("auto"))  # what the daemons around it run
    hooks = load_hooks(extra_plugins=[recorder])
    settings = RelaySettings(
        token=RELAY_TOKEN, addr=HostPort("127.0.0.1", 0), hostname="127.0.0.1",
        control_addr=HostPort("127.0.0.1", control.control_port), control_cas=certs / "ca.pem",
        control_name="127.0.0.1", store_dir=tmp_path / "relay-store", common=CommonSettings(transport="recording"),
    )
    relay = Relay(settings, hooks)
    payload = os.urandom(2 * 1024 * 1024)
    async with asyncio.TaskGroup() as tg, echo_server() as echo_port:
        task = tg.create_task(relay.run())
        try:
            await asyncio.wait_for(relay.started.wait(), 10)
            start_destination(daemons, control, echo_port, route="relay")
            _, source_port = start_source(daemons, control, route="relay")
            await wait_tunnel(source_port)
            received = await exchange(source_port, payload)
        finally:
            task.cancel()
    assert sha256(received) == sha256(payload)
    seen = bytes(recorder.transport.log)
    assert len(seen) > 2 * len(payload), "the relay carried the payload"
    # no 32-byte window of the payload appears in what the relay handled
    for offset in range(0, len(payload) - 32, 4096):
        assert payload[offset : offset + 32] not in seen


async def test_direct_at_one_end_relay_at_the_other_refuses(daemons, certs) -> None:
    control = start_control(daemons, certs)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port, route="relay")
        dst.wait_for("connected to control server")
        src, source_port = start_source(daemons, control, route="direct")
        src.wait_for("peer .* matched for source 'web'")
        mark = src.mark()
        try:
            reply = await exchange(source_port, b"hello")
        except (ConnectionError, OSError):
            reply = b""
        assert reply == b""
        src.wait_for(r"refusing a connection: no route: the source allows direct, the destination allows relay",
                     start=mark)

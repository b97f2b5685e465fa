"""Servers keep their identity across restarts (store-dir), clients come back by themselves,
and tunnels do not depend on the control server being up."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from support.cluster import free_udp_port, start_control, start_destination, start_relay, start_source
from support.services import echo_server, exchange, sha256, wait_tunnel

CERT_LINE = r"relay certificate sha256 ([0-9a-f]{64})"


async def test_relay_restart_keeps_its_certificate_and_clients_return(daemons, certs, tmp_path: Path) -> None:
    control = start_control(daemons, certs, store_dir=tmp_path / "control-store")
    port = free_udp_port()
    relay, _ = start_relay(daemons, control, addr=f"127.0.0.1:{port}", store_dir=tmp_path / "relay-store")
    first_cert = relay.wait_for(CERT_LINE).group(1)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port, route="relay")
        src, source_port = start_source(daemons, control, route="relay")
        await wait_tunnel(source_port)
        marks = (src.mark(), dst.mark())
        assert relay.stop() == 0
        stopped = time.monotonic()
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"relay \S+ (connection closed: shutdown|is no longer offered)", start=mark, timeout=2)
        assert time.monotonic() - stopped < 2.5
        again, _ = start_relay(daemons, control, name="relay-again", addr=f"127.0.0.1:{port}",
                               store_dir=tmp_path / "relay-store")
        assert again.wait_for(CERT_LINE).group(1) == first_cert
        restarted = time.monotonic()
        await wait_tunnel(source_port, timeout=10)
        assert time.monotonic() - restarted < 10
        payload = os.urandom(1 << 20)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)


async def test_control_restart_clients_reconnect(daemons, certs, tmp_path: Path) -> None:
    port = free_udp_port()
    store = tmp_path / "control-store"
    control = start_control(daemons, certs, addr=f"127.0.0.1:{port}", store_dir=store)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port)
        src, source_port = start_source(daemons, control)
        await wait_tunnel(source_port)
        marks = (src.mark(), dst.mark())
        assert control.daemon.stop() == 0
        stopped = time.monotonic()
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"lost the control server", start=mark, timeout=2)
        again = start_control(daemons, certs, name="control-again", addr=f"127.0.0.1:{port}", store_dir=store)
        restarted = time.monotonic()
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"connected to control server", start=mark, timeout=10)
        assert time.monotonic() - restarted < 10
        await wait_tunnel(source_port, timeout=10)
        assert again.daemon.proc.poll() is None and time.monotonic() - stopped < 30


async def test_tunnels_outlive_the_control_server(daemons, certs, tmp_path: Path) -> None:
    """Control stopped for 60 s: an open tunneled connection keeps flowing and new ones open
    over the existing peer connection; the clients reconnect when control is back."""
    port = free_udp_port()
    store = tmp_path / "control-store"
    control = start_control(daemons, certs, addr=f"127.0.0.1:{port}", store_dir=store)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port)
        src, source_port = start_source(daemons, control)
        await wait_tunnel(source_port)
        reader, writer = await asyncio.open_connection("127.0.0.1", source_port)
        try:
            mark = src.mark()
            assert control.daemon.stop() == 0
            src.wait_for(r"lost the control server", start=mark, timeout=5)
            down_since = time.monotonic()
            rounds = 0
            # the point of this test is the duration: 60 s without control, traffic all along
            while time.monotonic() - down_since < 60:
                chunk = os.urandom(64 * 1024)
                writer.write(chunk)
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(len(chunk)), 10) == chunk
                fresh = os.urandom(32 * 1024)
                assert await asyncio.wait_for(exchange(source_port, fresh), 10) == fresh
                rounds += 1
                await asyncio.sleep(2)
            assert rounds >= 20
        finally:
            writer.close()
        marks = (src.mark(), dst.mark())
        start_control(daemons, certs, name="control-again", addr=f"127.0.0.1:{port}", store_dir=store)
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"connected to control server", start=mark, timeout=15)
        payload = os.urandom(1 << 20)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)


async def test_crashed_control_is_noticed_at_once_after_restart(daemons, certs, tmp_path: Path) -> None:
    """SIGKILL: no close reaches the clients. The restarted control (same store, same reset
    key) answers their next packet with a stateless reset, long before the idle timeout."""
    port = free_udp_port()
    store = tmp_path / "control-store"
    control = start_control(daemons, certs, addr=f"127.0.0.1:{port}", store_dir=store)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port)
        src, source_port = start_source(daemons, control)
        await wait_tunnel(source_port)
        marks = (src.mark(), dst.mark())
        control.daemon.kill()
        start_control(daemons, certs, name="control-again", addr=f"127.0.0.1:{port}", store_dir=store)
        restarted = time.monotonic()
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"lost the control server \S+: peer-reset", start=mark, timeout=2)
        assert time.monotonic() - restarted < 2.5
        for client, mark in zip((src, dst), marks):
            client.wait_for(r"connected to control server", start=mark, timeout=10)
        payload = os.urandom(1 << 20)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)

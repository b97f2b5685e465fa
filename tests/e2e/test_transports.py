"""The key end-to-end scenarios once per QUIC library: every daemon gets ``--transport NAME``.

The rest of tests/e2e runs on the default (aioquic); these make sure qh3 carries the same
tunnels: an HTTP page, 64 MiB both ways, 1000 concurrent connections, a relayed 64 MiB.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from support.cluster import (
    ServerInfo,
    relayed_bytes,
    start_control,
    start_destination,
    start_relay,
    start_server,
    start_source,
    write_server_config,
)
from support.daemons import Daemons
from support.services import (
    echo_server,
    exchange,
    fetch_with_retry,
    http_server,
    sha256,
    slow_sink,
    upload_for_digest,
    wait_tunnel,
)


@pytest.fixture
def on(transport: str, daemons: Daemons, certs: Path) -> ServerInfo:
    return start_server(daemons, certs)


def test_http_page(on: ServerInfo, daemons: Daemons, tmp_path: Path, transport: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    page = os.urandom(32).hex() + f"<h1>hello over {transport}</h1>"
    (site / "index.html").write_text(page)
    with http_server(str(site)) as http_port:
        start_destination(daemons, on, http_port)
        _, source_port = start_source(daemons, on)
        assert fetch_with_retry(f"http://127.0.0.1:{source_port}/index.html") == page


def test_the_daemons_read_the_transport_from_the_environment(
    daemons: Daemons, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what makes the fixture above mean anything: a name no plugin provides stops the daemon
    monkeypatch.setenv("CONNET_TRANSPORT", "no-such-transport")
    config = write_server_config(daemons.workdir / "server.toml", certs)
    daemon = daemons.start("server", ["server", "--config", str(config)])
    daemon.wait_for(r"no-such-transport")
    assert daemon.proc.wait(10) != 0


async def test_64_mib_both_directions(on: ServerInfo, daemons: Daemons) -> None:
    payload = os.urandom(64 * 1024 * 1024)
    async with echo_server() as echo_port:
        start_destination(daemons, on, echo_port)
        _, source_port = start_source(daemons, on)
        await wait_tunnel(source_port)
        received = await asyncio.wait_for(exchange(source_port, payload), 240)
    assert len(received) == len(payload)
    assert sha256(received) == sha256(payload)


async def test_a_slow_program_behind_the_tunnel_holds_the_sender_back(on: ServerInfo, daemons: Daemons) -> None:
    """A destination service reading at 32 MB/s, slower than the tunnel: its unread data must
    hold the source back (aioquic: stream credit; qh3: the connection pauses) instead of
    piling up in the destination until something gives (qh3 used to close the connection at
    64 MiB unread). 96 MiB arrive intact through one tunneled connection."""
    payload = os.urandom(96 * 1024 * 1024)
    async with slow_sink(32_000_000) as sink_port:
        start_destination(daemons, on, sink_port)
        _, source_port = start_source(daemons, on)
        await wait_tunnel(source_port, answer=sha256(b"probe").encode())
        digest = await asyncio.wait_for(upload_for_digest(source_port, payload), 120)
    assert digest == sha256(payload)


async def test_eight_slow_programs_behind_one_connection(on: ServerInfo, daemons: Daemons, transport: str) -> None:
    """Eight tunneled connections into eight slow readers (4 MB/s each), all on one peer
    connection: each arrives intact and ends (its FIN gets through)."""
    payloads = [os.urandom(16 * 1024 * 1024) for _ in range(8)]
    async with slow_sink(4_000_000) as sink_port:
        start_destination(daemons, on, sink_port)
        _, source_port = start_source(daemons, on)
        await wait_tunnel(source_port, answer=sha256(b"probe").encode())
        digests = await asyncio.wait_for(asyncio.gather(*(upload_for_digest(source_port, p) for p in payloads)), 120)
    assert digests == [sha256(p) for p in payloads]


# 1000 on both. qh3 2.1.0 can still lose the connection in such a burst now and then with
# "reserved stream is missing" (a core bug, not worked around: connet_quic/_qh3_core.py,
# docs/performance.md, Known problems)
CONCURRENT = {"aioquic": 1000, "qh3": 1000}


async def test_concurrent_connections(on: ServerInfo, daemons: Daemons, transport: str) -> None:
    payloads = [os.urandom(2048 + i) for i in range(CONCURRENT[transport])]
    async with echo_server() as echo_port:
        start_destination(daemons, on, echo_port)
        _, source_port = start_source(daemons, on)
        await wait_tunnel(source_port)
        results = await asyncio.wait_for(
            asyncio.gather(*(exchange(source_port, p) for p in payloads), return_exceptions=True), 180
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} connections failed, first: {failures[0]!r}"
    assert [sha256(r) for r in results] == [sha256(p) for p in payloads]


async def test_relay_route_64_mib(transport: str, daemons: Daemons, certs: Path) -> None:
    control = start_control(daemons, certs)
    relay, _ = start_relay(daemons, control)
    relay.wait_for("registered with control server")
    payload = os.urandom(64 * 1024 * 1024)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port, route="relay")
        src, source_port = start_source(daemons, control, route="relay")
        await wait_tunnel(source_port)
        received = await asyncio.wait_for(exchange(source_port, payload), 300)
        assert sha256(received) == sha256(payload)
        # the relay counted the payload both ways (plus TLS framing)
        relay.wait_for(r"relayed a stream for 'web': (\d{9,}) bytes")
        assert relayed_bytes(relay) >= 2 * len(payload)
    assert "connected direct" not in src.log() and "connected direct" not in dst.log()
    assert re.search(r"connection via relay path", src.log())

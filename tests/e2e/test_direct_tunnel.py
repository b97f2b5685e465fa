"""Direct tunnels between two real clients through a real control server, on loopback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from support.cluster import start_destination, start_source
from support.services import echo_server, exchange, fetch_with_retry, http_server, wait_tunnel


def test_http_page_through_the_tunnel(server, daemons, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    page = os.urandom(32).hex() + "<h1>hello through connet</h1>"
    (site / "index.html").write_text(page)
    with http_server(str(site)) as http_port:
        start_destination(daemons, server, http_port)
        _, source_port = start_source(daemons, server)
        body = fetch_with_retry(f"http://127.0.0.1:{source_port}/index.html")
    assert body == page


# 64 MiB both ways and 1000 concurrent connections run per transport in test_transports.py.


async def test_source_started_before_destination(server, daemons) -> None:
    async with echo_server() as echo_port:
        src, source_port = start_source(daemons, server)
        src.wait_for(r"connected to control server")
        start_destination(daemons, server, echo_port)
        await wait_tunnel(source_port)
        assert await exchange(source_port, b"x" * 100_000) == b"x" * 100_000


async def test_destination_restart(server, daemons) -> None:
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port)
        src, source_port = start_source(daemons, server)
        await wait_tunnel(source_port)
        assert dst.stop() == 0
        restarted = start_destination(daemons, server, echo_port, name="dst-again")
        restarted.wait_for(r"connected to control server")
        started = time.monotonic()
        await wait_tunnel(source_port, timeout=10)
        assert time.monotonic() - started < 10
        assert await exchange(source_port, b"again") == b"again"


async def test_data_flows_between_the_clients_own_sockets(server, daemons) -> None:
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port)
        src, source_port = start_source(daemons, server)
        _, dst_port = dst.listening("direct")
        _, src_port = src.listening("direct")
        await wait_tunnel(source_port)
        # each side names the other's direct socket as the path; neither is the server's port
        src.wait_for(rf"peer \S+ connected direct via 127\.0\.0\.1:{dst_port}\b")
        dst.wait_for(rf"peer \S+ connected direct via 127\.0\.0\.1:{src_port}\b")
        assert server.control_port not in (dst_port, src_port)


def test_sigterm_stops_within_two_seconds_and_peers_notice(server, daemons) -> None:
    with http_server(".") as http_port:
        dst = start_destination(daemons, server, http_port)
        src, _ = start_source(daemons, server)
        src.wait_for(r"peer \S+ connected direct")
        dst.wait_for(r"peer \S+ connected direct")
        mark = src.mark()
        started = time.monotonic()
        assert dst.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - started < 2.0
        # the source learns at once (a close code, not an idle timeout)
        src.wait_for(r"direct path .* closed: shutdown", timeout=2, start=mark)

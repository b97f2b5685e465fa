"""The dashboard (``connet tui``) against real processes: rows, navigation, down and back.

Set ``WRITE_DASHBOARD_SVG=1`` (not a ``CONNET_*`` name: the daemons would read it as configuration) to have ``test_dashboard_with_a_direct_and_a_relayed_tunnel``
write docs/dashboard.svg (see docs/tui.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

pytest.importorskip("textual")

from connet_tui.app import DetailScreen, StatusApp  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from support.cluster import start_destination, start_server, start_source  # noqa: E402
from support.daemons import Daemon  # noqa: E402
from support.services import echo_server, exchange_through  # noqa: E402

LOCAL = "127.0.0.1:0"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.svg"
PATH, VIA = 4, 5  # columns of the tunnels table


async def status_url(daemon: Daemon) -> str:
    host, port = await asyncio.to_thread(daemon.listening, "status", "tcp")
    return f"http://{host}:{port}/"


async def until(app: StatusApp, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait poll by poll (no sleeping) until ``predicate()`` holds for what is on screen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        remaining = deadline - loop.time()
        if remaining <= 0:
            rows = {t: [app.cell_text(t, k) for k in app.row_keys(t)] for t in ("endpoints", "tunnels")}
            raise AssertionError(f"not within {timeout}s: {what}; on screen: {rows}")
        try:
            await asyncio.wait_for(app.next_poll(), remaining)
        except TimeoutError:
            pass  # the loop condition reports it


def tunnel_rows(app: StatusApp, url: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(k, app.cell_text("tunnels", k)) for k in app.row_keys("tunnels") if k.startswith(f"t|{url}|")]


def health(app: StatusApp, url: str) -> str:
    key = f"e|{url}"
    return app.cell_text("endpoints", key)[2] if key in app.row_keys("endpoints") else ""


async def test_direct_tunnel_details_and_an_endpoint_going_down_and_back(daemons, certs) -> None:
    server = start_server(daemons, certs, status_addr=LOCAL)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, status_addr=LOCAL)
        src, source_port = start_source(daemons, server, status_addr=LOCAL)
        server_url, dst_url, src_url = [await status_url(d) for d in (server.daemon, dst, src)]
        _, dst_direct = await asyncio.to_thread(dst.listening, "direct")
        await asyncio.to_thread(src.wait_for, r"peer \S+ connected direct")
        assert await exchange_through(source_port, b"z" * 100_000) == b"z" * 100_000

        app = StatusApp([server_url, dst_url, src_url], interval=0.2)
        async with app.run_test(size=(200, 40)) as pilot:
            await until(app, lambda: any(row[PATH] == "direct" for _, row in tunnel_rows(app, src_url)),
                        "the source shows a direct path")
            (key, row), = [(k, r) for k, r in tunnel_rows(app, src_url) if r[PATH] == "direct"]
            assert row[VIA] == f"127.0.0.1:{dst_direct}"  # the peer's own address
            assert row[1] == "source web"
            assert all(health(app, u) == "up" for u in (server_url, dst_url, src_url))
            assert "2 clients" in app.cell_text("endpoints", f"e|{server_url}")[3]

            # keyboard: to the row, Enter opens its details, Escape comes back
            table = app.query_one("#tunnels", DataTable)
            table.focus()
            await pilot.press("home")
            while table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value != key:
                await pilot.press("down")
            await pilot.press("enter")
            assert isinstance(app.screen, DetailScreen) and app.screen.key == key
            assert app.model.details[key]["path"]["addr"] == f"127.0.0.1:{dst_direct}"
            await pilot.press("escape")
            assert not isinstance(app.screen, DetailScreen)

            # the destination goes away: marked down, its rows stale; the rest carries on
            dst_port = int(dst_url.rsplit(":", 1)[1].rstrip("/"))
            assert await asyncio.to_thread(dst.stop) == 0
            await until(app, lambda: health(app, dst_url).startswith("DOWN"), "the destination marked down")
            assert all(row[PATH] == "stale" for _, row in tunnel_rows(app, dst_url))
            assert health(app, src_url) == "up"

            # ... and comes back on the same status address: the dashboard recovers by itself
            again = start_destination(daemons, server, echo_port, name="dst-again",
                                      status_addr=f"127.0.0.1:{dst_port}")
            await asyncio.to_thread(again.listening, "status", "tcp")
            await until(app, lambda: health(app, dst_url) == "up", "the destination back up")
            await until(app, lambda: any(row[PATH] == "direct" for _, row in tunnel_rows(app, dst_url)),
                        "the restarted destination's direct path")
            await pilot.press("q")


async def test_dashboard_with_a_direct_and_a_relayed_tunnel(daemons, certs) -> None:
    server = start_server(daemons, certs, status_addr=LOCAL)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, status_addr=LOCAL)
        direct, direct_port = start_source(daemons, server, name="src-direct", route="direct", status_addr=LOCAL)
        relayed, relayed_port = start_source(daemons, server, name="src-relay", route="relay", status_addr=LOCAL)
        urls = [await status_url(d) for d in (server.daemon, dst, direct, relayed)]
        await asyncio.to_thread(direct.wait_for, r"peer \S+ connected direct")
        await asyncio.to_thread(relayed.wait_for, r"relay \S+ connected")

        app = StatusApp(urls, interval=0.5)
        async with app.run_test(size=(190, 30)) as pilot:
            await until(app, lambda: any(r[PATH] == "direct" for _, r in tunnel_rows(app, urls[2])), "direct path")
            await until(app, lambda: any(r[PATH] == "relay" for _, r in tunnel_rows(app, urls[3])), "relay path")
            for _ in range(4):  # traffic over a few polls, so throughput and trends show
                for port in (direct_port, relayed_port):
                    assert await exchange_through(port, b"t" * 300_000) == b"t" * 300_000
                await app.next_poll()
            relayed_rows = tunnel_rows(app, urls[3])
            assert [r[PATH] for _, r in relayed_rows] == ["relay"]  # and never direct
            relay_port = (await asyncio.to_thread(server.daemon.listening, "relay"))[1]
            assert relayed_rows[0][1][VIA].endswith(f":{relay_port}")
            assert relayed_rows[0][1][8] != "—"  # throughput measured between polls
            await pilot.pause()
            if os.environ.get("WRITE_DASHBOARD_SVG") == "1":
                SCREENSHOT.write_text(app.export_screenshot(title="connet tui"))
            await pilot.press("q")


async def test_several_config_files_show_each_daemon(daemons, certs, tmp_path: Path) -> None:
    """``connet tui --config A --config B --config C`` (issue 18): one set of rows per file,
    partial files (no token: the dashboard needs only status-addr) accepted."""
    from connet_core.status_targets import status_urls

    server = start_server(daemons, certs, status_addr=LOCAL)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, status_addr=LOCAL)
        src, _ = start_source(daemons, server, status_addr=LOCAL)
        files = []
        for name, section, daemon in (("a", "server", server.daemon), ("b", "client", dst), ("c", "client", src)):
            host, port = await asyncio.to_thread(daemon.listening, "status", "tcp")
            path = tmp_path / f"{name}.toml"
            path.write_text(f'[{section}]\nstatus-addr = "{host}:{port}"\n')
            files.append(path)
        # the command line's own path from files to URLs, as `connet tui` takes it
        urls = status_urls(files)
        assert len(urls) == 3
        app = StatusApp(urls, interval=0.2)
        async with app.run_test(size=(200, 40)) as pilot:
            await until(app, lambda: all(health(app, u) == "up" for u in urls), "three endpoints up")
            await until(app, lambda: all(tunnel_rows(app, u) for u in urls[1:]), "each client's own rows")
            assert [app.cell_text("endpoints", f"e|{u}")[1] for u in urls] == ["server", "client", "client"]
            assert {row[1] for _, row in tunnel_rows(app, urls[1])} == {"destination web"}
            assert {row[1] for _, row in tunnel_rows(app, urls[2])} == {"source web"}
            await pilot.press("q")


def test_the_daemons_never_import_textual() -> None:
    code = (
        "import sys, connet_core, connet_core.cli, connet_core.runner, connet_core.status, "
        "connet_core.client, connet_core.server, connet_core.control, connet_core.relay\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'connet_tui'))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

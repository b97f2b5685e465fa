"""The dashboard's model, its fetcher, and the app against an in-process status endpoint."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("textual")

from connet_core.model import HostPort  # noqa: E402
from connet_core.status import StatusServer  # noqa: E402
from connet_tui.app import StatusApp  # noqa: E402
from textual.widgets import DataTable  # noqa: E402
from connet_tui.fetch import StatusUnavailable, fetch_status, normalize_url, parse_answer  # noqa: E402
from connet_tui.model import Dashboard, Series, sparkline  # noqa: E402

CLIENT = {
    "role": "client", "id": "aaaaaaaaaaaa", "control": {"addr": "c:1", "connected": True},
    "observed_addr": "o:1", "direct_addr": "d:1",
    "endpoints": [{
        "name": "web", "role": "source", "route": "any", "addr": "s:1", "refused": None,
        "peers": [{"id": "bbbbbbbbbbbb", "paths": [
            {"kind": "direct", "addr": "p:1", "rtt": 0.0015, "bytes_sent": 1000, "bytes_received": 0,
             "active_streams": 2}]}],
        "bytes_in": 0, "bytes_out": 0, "active_connections": 2, "total_connections": 5,
    }],
}
PATH_KEY = "t|u|source|web|bbbbbbbbbbbb|direct|p:1"


def with_bytes(sent: int) -> dict:
    """The name "web" carried ``sent`` bytes; its path's counters (the whole peer connection's)
    stay what they were."""
    report = {**CLIENT, "endpoints": [dict(CLIENT["endpoints"][0])]}
    report["endpoints"][0]["bytes_in"] = sent
    return report


def test_throughput_is_the_counter_difference_between_polls() -> None:
    model = Dashboard(["u"])
    model.record("u", with_bytes(1000), None, now=10.0)
    model.record("u", with_bytes(3000), None, now=12.0)
    model.record("u", with_bytes(500), None, now=13.0)  # a new connection: counters restart
    assert list(model.series["n|u|source|web"].rates) == [1000.0, 0.0]
    (key, row), = model.tunnel_rows()
    assert key == PATH_KEY
    assert row[4].plain == "direct" and row[5] == "p:1" and row[6] == "1.5 ms"
    assert row[7] == "500 B" and row[8] == "0 B/s"
    assert row[10] == "2/5" and row[11] == "2"


def test_bytes_and_rate_are_per_name_not_per_path() -> None:
    """Two names over one peer connection: the idle one shows no traffic (issue 18)."""
    def report(busy: int) -> dict:
        path = {"kind": "direct", "addr": "p:1", "rtt": 0.001, "bytes_sent": busy, "bytes_received": 0}
        peers = [{"id": "bbbbbbbbbbbb", "paths": [path]}]
        return {**CLIENT, "endpoints": [
            {**CLIENT["endpoints"][0], "name": "busy", "peers": peers, "bytes_in": busy, "bytes_out": 0},
            {**CLIENT["endpoints"][0], "name": "idle", "peers": peers, "bytes_in": 0, "bytes_out": 0},
        ]}

    model = Dashboard(["u"])
    model.record("u", report(0), None, now=1.0)
    model.record("u", report(4096), None, now=2.0)
    rows = {row[1]: row for _, row in model.tunnel_rows()}
    assert rows["source busy"][7:9] == ("4.0 KiB", "4.0 KiB/s")
    assert rows["source idle"][7:9] == ("0 B", "0 B/s")
    assert model.series_for("t|u|source|idle|bbbbbbbbbbbb|direct|p:1").rate == 0.0


def test_an_endpoint_down_keeps_its_rows_as_stale_and_recovers() -> None:
    model = Dashboard(["u"])
    assert model.endpoint_rows()[0][1][2].plain == "polling"
    model.record("u", CLIENT, None, now=1.0)
    model.record("u", None, "connection refused", now=2.0)
    health = model.endpoint_rows(now=5.0)[0][1][2].plain
    assert health == "DOWN 3s: connection refused"
    assert [row[4].plain for _, row in model.tunnel_rows()] == ["stale"]
    model.record("u", CLIENT, None, now=6.0)
    assert model.endpoint_rows()[0][1][2].plain == "up"
    assert [row[4].plain for _, row in model.tunnel_rows()] == ["direct"]


def test_rows_for_endpoints_without_peers_or_paths_and_degraded_health() -> None:
    report = {**CLIENT, "control": {"addr": "c:1", "connected": False},
              "endpoints": [{**CLIENT["endpoints"][0], "peers": [], "refused": "forbidden"},
                            {**CLIENT["endpoints"][0], "name": "db", "peers": [{"id": "x", "paths": []}]}]}
    model = Dashboard(["u"])
    model.record("u", report, None)
    rows = dict(model.tunnel_rows())
    assert rows["t|u|source|web|-|-|-"][12].plain == "forbidden"
    assert rows["t|u|source|db|x|-|-"][12] == "no path"
    assert model.endpoint_rows()[0][1][2].plain == "degraded: no control, refused web"


def test_peers_are_named_by_the_polled_client_they_are() -> None:
    model = Dashboard(["http://a/", "http://b/"])
    model.record("http://a/", CLIENT, None)
    model.record("http://b/", {**CLIENT, "id": "bbbbbbbbbbbb", "endpoints": []}, None)
    assert model.tunnel_rows()[0][1][3] == "bbbbbbbbbbbb (b)"


def test_metadata_names_clients_relays_and_peers() -> None:
    model = Dashboard(["http://a/", "http://b/", "http://c/"])
    model.record("http://a/", CLIENT, None)
    model.record("http://b/", {**CLIENT, "id": "bbbbbbbbbbbb", "metadata": "lab", "endpoints": []}, None)
    model.record("http://c/", {"role": "control", "clients": [{"metadata": "lab"}, {"metadata": ""}],
                               "relays": [{"metadata": "edge-1"}], "names": {}}, None)
    assert model.tunnel_rows()[0][1][3] == "bbbbbbbbbbbb (lab)"
    summaries = [row[1][3] for row in model.endpoint_rows()]
    assert summaries[1].startswith("[lab] 0 dst, 0 src")
    assert summaries[2] == "2 clients, 1 relay, 0 names (edge-1, lab)"


def test_sparkline_and_series() -> None:
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([0, 5, 10]) == "▁▅█"
    series = Series()
    series.feed(1.0, 10)
    assert series.rate is None
    series.feed(1.0, 20)  # same instant: no rate from a zero interval
    assert series.rate is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"HTTP/1.1 500 Internal Server Error\r\n\r\n", "HTTP 500"), (b"junk", "incomplete"),
     (b"SSH-2.0\r\n\r\n", "not an HTTP answer"), (b"HTTP/1.1 200 OK\r\n\r\n{", "not JSON"),
     (b"HTTP/1.1 200 OK\r\n\r\n[1]", "not an object")],
)
def test_bad_answers_are_unavailable(data: bytes, reason: str) -> None:
    with pytest.raises(StatusUnavailable, match=reason):
        parse_answer(data)


def test_normalize_url() -> None:
    assert normalize_url("127.0.0.1:5") == "http://127.0.0.1:5/"
    assert normalize_url("http://h:5/x") == "http://h:5/x"


async def test_fetch_failures_are_status_unavailable() -> None:
    with pytest.raises(StatusUnavailable, match="not an http"):
        await fetch_status("https://127.0.0.1:1/")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(StatusUnavailable, match="refused"):
        await fetch_status(f"http://127.0.0.1:{port}/")


async def until(app: StatusApp, predicate, timeout: float = 5.0) -> None:
    """Poll by poll: a poll already under way may have fetched before the change."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await app.next_poll()


class Fake:
    def __init__(self) -> None:
        self.broken = False

    def status(self) -> dict:
        if self.broken:
            raise RuntimeError("boom")
        return CLIENT


async def test_app_shows_rows_detail_and_an_endpoint_failing() -> None:
    fake = Fake()
    server = StatusServer(fake, HostPort("127.0.0.1", 0))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve())
        await server.bound.wait()
        assert server.local_address is not None
        url = f"http://127.0.0.1:{server.local_address.port}/"
        app = StatusApp([url], interval=0.1)
        async with app.run_test() as pilot:
            await until(app, lambda: app.polls > 0)
            key = f"t|{url}|source|web|bbbbbbbbbbbb|direct|p:1"
            assert app.cell_text("tunnels", key)[4] == "direct"
            await pilot.press("enter")  # the only row has the cursor
            assert getattr(app.screen, "key", None) == key
            await pilot.press("escape")
            fake.broken = True
            await until(app, lambda: app.cell_text("endpoints", f"e|{url}")[2].startswith("DOWN"))
            health = app.cell_text("endpoints", f"e|{url}")[2]
            assert health.endswith("HTTP 500 Internal Server Error")
            # on screen whole: the column grew from "polling"/"up" (issue 18: "DOWN 4")
            column = app.query_one("#endpoints", DataTable).columns["health"]  # type: ignore[index]
            assert column.content_width >= len(health)
            assert app.cell_text("tunnels", key)[4] == "stale"
            fake.broken = False
            await until(app, lambda: app.cell_text("endpoints", f"e|{url}")[2] == "up")
            await pilot.press("q")
        task.cancel()

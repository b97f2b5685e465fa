"""``connet tui``: a live dashboard over status endpoints (Textual).

Every ``interval`` seconds the app fetches each status URL at once (asyncio streams, in a task
group), feeds the answers to :class:`~connet_tui.model.Dashboard`, and brings its two tables up
to date cell by cell, by stable row keys — rows never jump and the cursor stays put. An
endpoint that does not answer is marked down (its tunnel rows stay, marked stale) and comes
back by itself on the first poll it answers again.

Keys: arrows move, Tab switches table, Enter opens a row's details, Escape goes back,
r polls now, q quits.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from rich.json import JSON
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Sparkline, Static

from connet_tui.fetch import StatusUnavailable, fetch_status, normalize_url
from connet_tui.model import ENDPOINT_COLUMNS, TUNNEL_COLUMNS, Dashboard, human_rate

POLL_INTERVAL = 1.0


class DetailScreen(Screen):
    """Everything behind one row, kept live: the raw status objects and a throughput sparkline."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"), Binding("q", "app.quit", "quit")]

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(id="detail-title")
        yield Label(id="detail-rate")
        yield Sparkline([], id="detail-spark")
        # the objects scroll on their own, under the title and the sparkline: the screen's
        # scrollbar beside them read as stray sparkline glyphs (issue 18)
        with VerticalScroll(id="detail-scroll"):
            yield Static(id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(self.app.interval, self.refresh_view)  # type: ignore[attr-defined]

    def refresh_view(self) -> None:
        model: Dashboard = self.app.model  # type: ignore[attr-defined]
        kind, url, *rest = self.key.split("|")
        what = "endpoint" if kind == "e" else "tunnel " + " ".join(p for p in rest if p != "-")
        self.query_one("#detail-title", Label).update(Text(f"{url} — {what}", style="bold"))
        series = model.series_for(self.key)
        rates = list(series.rates) if series else []
        self.query_one("#detail-rate", Label).update(
            f"throughput of the name {human_rate(series.rate if series else None)} (last {len(rates)} polls)"
            if kind == "t" else "")
        self.query_one("#detail-spark", Sparkline).data = rates
        self.query_one("#detail-body", Static).update(JSON.from_data(model.details.get(self.key, {}), default=str))


class StatusApp(App):
    """The dashboard over ``urls``."""

    TITLE = "connet status"
    CSS = """
    #endpoints { height: auto; max-height: 40%; }
    #tunnels { height: 1fr; }
    .caption { padding: 0 1; color: $text-muted; }
    #detail-spark { height: 4; margin: 0 1; }
    #detail-title, #detail-rate { padding: 0 1; }
    #detail-scroll { height: 1fr; scrollbar-size-vertical: 1; }
    #detail-body { padding: 0 1; }
    """
    BINDINGS = [Binding("q", "quit", "quit"), Binding("r", "poll_now", "poll now")]

    def __init__(self, urls: Sequence[str], interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.urls = list(dict.fromkeys(normalize_url(u) for u in urls))  # once each, in order
        self.interval = interval
        self.model = Dashboard(self.urls)
        self.polls = 0
        self._polling = False
        self._polled: asyncio.Condition | None = None
        self._cells: dict[str, dict[str, tuple[Any, ...]]] = {"endpoints": {}, "tunnels": {}}

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            yield Label("endpoints", classes="caption")
            yield DataTable(id="endpoints", cursor_type="row", zebra_stripes=True)
            yield Label("tunnels (per client: destinations and sources, their peers and paths; "
                        "bytes, rate and trend per name)", classes="caption")
            yield DataTable(id="tunnels", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._polled = asyncio.Condition()
        for table_id, columns in (("endpoints", ENDPOINT_COLUMNS), ("tunnels", TUNNEL_COLUMNS)):
            table = self.query_one(f"#{table_id}", DataTable)
            for column in columns:
                table.add_column(column, key=column)
        self.query_one("#tunnels", DataTable).focus()
        self.set_interval(self.interval, self.poll)
        self.call_later(self.poll)  # the first poll now, not after one interval

    async def action_poll_now(self) -> None:
        await self.poll()

    async def poll(self) -> None:
        """Fetch every endpoint at once; a slow one delays this poll by its timeout at most."""
        if self._polling:
            return  # the previous poll is still waiting on a slow endpoint
        self._polling = True
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {url: tg.create_task(self._fetch(url)) for url in self.urls}
            now = time.monotonic()
            for url, task in tasks.items():
                report, error = task.result()
                self.model.record(url, report, error, now)
            self._show()
        finally:
            self._polling = False
        self.polls += 1
        assert self._polled is not None
        async with self._polled:
            self._polled.notify_all()

    async def _fetch(self, url: str) -> tuple[dict | None, str | None]:
        try:
            return await fetch_status(url, timeout=max(0.5, min(2.0, 2 * self.interval))), None
        except StatusUnavailable as exc:
            return None, str(exc)

    def _show(self) -> None:
        self._sync("endpoints", self.model.endpoint_rows())
        self._sync("tunnels", self.model.tunnel_rows())

    def _sync(self, table_id: str, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Bring a table to ``rows``: add new keys, update changed cells, drop vanished keys."""
        table = self.query_one(f"#{table_id}", DataTable)
        columns = ENDPOINT_COLUMNS if table_id == "endpoints" else TUNNEL_COLUMNS
        known = self._cells[table_id]
        for key, cells in rows:
            old = known.get(key)
            if old is None:
                table.add_row(*cells, key=key)
            else:
                for column, before, after in zip(columns, old, cells):
                    if before != after:
                        # the width follows the content: "DOWN 12s: connection refused" replaces
                        # "polling" and must not be cut to the old width
                        table.update_cell(key, column, after, update_width=True)
            known[key] = cells
        for key in set(known) - {key for key, _ in rows}:
            table.remove_row(key)
            del known[key]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.push_screen(DetailScreen(event.row_key.value))

    # ---- for tests and scripts -----------------------------------------------------------

    async def next_poll(self) -> None:
        """Until the next poll has been shown."""
        assert self._polled is not None
        async with self._polled:
            await self._polled.wait()

    def cell_text(self, table_id: str, key: str) -> tuple[str, ...]:
        """A row as plain strings (what is on screen, without styles)."""
        cells = self._cells[table_id][key]
        return tuple(c.plain if isinstance(c, Text) else str(c) for c in cells)

    def row_keys(self, table_id: str) -> list[str]:
        return list(self._cells[table_id])


def run(urls: Sequence[str]) -> int:
    """``connet tui``'s entry point: run the dashboard until q; the exit code."""
    StatusApp(urls).run()
    return 0

"""What the dashboard shows, computed from status reports: no widgets here, so it is easy to test.

Rows have stable keys (``e|<url>`` for an endpoint, ``t|<url>|<role>|<name>|<peer>|<kind>|<addr>``
for a tunnel path), so the app updates cells in place instead of rebuilding its tables.
Bytes and throughput are per name (a destination's or source's own byte counters, the
difference between two polls): a path's counters are the whole peer connection's, shared by
every name that uses it, so an idle name on a busy peer would show the busy one's rate.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

HISTORY = 60  # polls of throughput kept per row (the detail view's sparkline)
TREND = 12  # of which the table's inline sparkline shows the last few
BLOCKS = "▁▂▃▄▅▆▇█"

ENDPOINT_COLUMNS = ("status URL", "role", "health", "summary", "uptime", "version")
TUNNEL_COLUMNS = ("client", "endpoint", "route", "peer", "path", "via", "rtt", "bytes", "rate", "trend",
                  "conns", "streams", "errors")


def name_key(url: str, endpoint: dict) -> str:
    """The key of a name's throughput series: ``n|<url>|<role>|<name>``."""
    return f"n|{url}|{endpoint.get('role')}|{endpoint.get('name')}"


@dataclass
class Series:
    """Rate of a byte counter between polls, with its recent history."""

    last: tuple[float, int] | None = None
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def feed(self, now: float, total: int) -> None:
        if self.last is not None and now > self.last[0]:
            # a counter that went down belongs to a new connection: start over from it
            self.rates.append(max(0.0, (total - self.last[1]) / (now - self.last[0])))
        self.last = (now, total)

    @property
    def rate(self) -> float | None:
        return self.rates[-1] if self.rates else None


@dataclass
class Endpoint:
    """One status URL and what its last poll said."""

    url: str
    report: dict | None = None
    error: str | None = None
    up: bool | None = None  # None until the first poll answered or failed
    since: float = field(default_factory=time.monotonic)  # when ``up`` last changed
    polls: int = 0


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(rate: float | None) -> str:
    return "—" if rate is None else human_bytes(rate) + "/s"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5))] for v in values)


def short_url(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _list(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _rtt(value: object) -> str:
    return f"{value * 1000:.1f} ms" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _count(items: object, word: str) -> str:
    n = len(items)  # type: ignore[arg-type]
    return f"{n} {word}{'' if n == 1 else 's'}"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _bytes(endpoint: dict) -> int:
    """A name's bytes both ways: what its tunnels carried, whatever path they took."""
    return _int(endpoint.get("bytes_in")) + _int(endpoint.get("bytes_out"))


class Dashboard:
    """The state behind the screen: endpoints, their last reports, throughput series."""

    def __init__(self, urls: list[str]) -> None:
        self.endpoints: dict[str, Endpoint] = {url: Endpoint(url) for url in urls}
        self.series: dict[str, Series] = {}
        self.details: dict[str, dict[str, Any]] = {}  # row key -> the objects behind the row

    # ---- input ---------------------------------------------------------------------------

    def record(self, url: str, report: dict | None, error: str | None, now: float | None = None) -> None:
        """One poll's outcome for ``url``: a report, or why there is none."""
        now = time.monotonic() if now is None else now
        endpoint = self.endpoints[url]
        up = report is not None
        if endpoint.up is not up:
            endpoint.since = now
        endpoint.up, endpoint.error, endpoint.polls = up, error, endpoint.polls + 1
        if report is None:
            return  # keep the last report: its rows stay, marked as stale
        endpoint.report = report
        if report.get("role") == "client":
            for name in _list(report.get("endpoints")):
                self.series.setdefault(name_key(url, name), Series()).feed(now, _bytes(name))

    def series_for(self, row_key: str) -> Series | None:
        """The throughput series a row shows: its name's, for a tunnel row."""
        details = self.details.get(row_key) or {}
        endpoint = details.get("endpoint")
        if row_key.startswith("t|") and isinstance(endpoint, dict):
            return self.series.get(name_key(details["url"], endpoint))
        return None

    def _tunnels(self, url: str, report: dict) -> list[tuple[str, dict, dict | None, dict | None]]:
        """Every (key, endpoint, peer, path) of a client report; a peer without paths and an
        endpoint without peers get one row each too, so nothing matched goes unseen."""
        if report.get("role") != "client":
            return []
        rows = []
        for endpoint in _list(report.get("endpoints")):
            base = f"t|{url}|{endpoint.get('role')}|{endpoint.get('name')}"
            peers = _list(endpoint.get("peers"))
            if not peers:
                rows.append((f"{base}|-|-|-", endpoint, None, None))
            for peer in peers:
                paths = _list(peer.get("paths"))
                if not paths:
                    rows.append((f"{base}|{peer.get('id')}|-|-", endpoint, peer, None))
                for path in paths:
                    rows.append((f"{base}|{peer.get('id')}|{path.get('kind')}|{path.get('addr')}", endpoint, peer, path))
        return rows

    # ---- output --------------------------------------------------------------------------

    def endpoint_rows(self, now: float | None = None) -> list[tuple[str, tuple[Any, ...]]]:
        now = time.monotonic() if now is None else now
        rows = []
        for url, endpoint in self.endpoints.items():
            report = endpoint.report or {}
            key = f"e|{url}"
            self.details[key] = {"url": url, "up": endpoint.up, "error": endpoint.error, "status": endpoint.report}
            uptime = report.get("uptime")
            rows.append((key, (
                short_url(url),
                str(report.get("role", "?")),
                self._health(endpoint, report, now),
                self._summary(report) if endpoint.report is not None else "",
                human_duration(uptime) if isinstance(uptime, (int, float)) and endpoint.up else "—",
                str(report.get("version", "")),
            )))
        return rows

    def _health(self, endpoint: Endpoint, report: dict, now: float) -> Text:
        if endpoint.up is None:
            return Text("polling", style="dim")
        if not endpoint.up:
            return Text(f"DOWN {human_duration(now - endpoint.since)}: {endpoint.error}", style="bold red")
        problems = []
        role = report.get("role")
        if role == "client":
            if not (report.get("control") or {}).get("connected"):
                problems.append("no control")
            problems += [f"refused {e.get('name')}" for e in _list(report.get("endpoints")) if e.get("refused")]
        elif role == "relay" and report.get("control_connected") is False:
            problems.append("not registered")
        if problems:
            return Text("degraded: " + ", ".join(problems), style="yellow")
        return Text("up", style="green")

    def _summary(self, report: dict) -> str:
        """One line per polled endpoint, led by its metadata key when it set one."""
        text = self._role_summary(report)
        metadata = report.get("metadata")
        return f"[{metadata}] {text}" if isinstance(metadata, str) and metadata else text

    def _role_summary(self, report: dict) -> str:
        role = report.get("role")
        if role == "client":
            endpoints = _list(report.get("endpoints"))
            count = {r: sum(1 for e in endpoints if e.get("role") == r) for r in ("destination", "source")}
            control = report.get("control") or {}
            return (f"{count['destination']} dst, {count['source']} src · control {control.get('addr')} · "
                    f"observed {report.get('observed_addr') or '—'}")
        if role == "server":
            return self._control_summary(report.get("control") or {}) + " · " + self._relay_summary(
                report.get("relay") or {})
        if role == "control":
            return self._control_summary(report)
        if role == "relay":
            return self._relay_summary(report)
        return ""

    @staticmethod
    def _control_summary(report: dict) -> str:
        names = report.get("names")
        # the clients' and relays' metadata: who is connected, as their operators named them
        tags = sorted({str(c.get("metadata")) for c in (*_list(report.get("clients")), *_list(report.get("relays")))
                       if c.get("metadata")})
        return (f"{_count(_list(report.get('clients')), 'client')}, {_count(_list(report.get('relays')), 'relay')}, "
                f"{_count(names if isinstance(names, dict) else [], 'name')}"
                + (f" ({', '.join(tags)})" if tags else ""))

    @staticmethod
    def _relay_summary(report: dict) -> str:
        return (f"relay: {_count(_list(report.get('clients')), 'client')}, "
                f"{_count(range(_int(report.get('streams_active'))), 'stream')}, "
                f"{human_bytes(_int(report.get('bytes_relayed')))} relayed")

    def peer_label(self, peer_id: str) -> str:
        """A peer's id, with the status URL of the polled client it is, when one says so."""
        for url, endpoint in self.endpoints.items():
            if endpoint.report and endpoint.report.get("id") == peer_id:
                return f"{peer_id} ({endpoint.report.get('metadata') or short_url(url)})"
        return peer_id

    def tunnel_rows(self) -> list[tuple[str, tuple[Any, ...]]]:
        rows = []
        for url, state in self.endpoints.items():
            if state.report is None:
                continue
            stale = not state.up
            for key, endpoint, peer, path in self._tunnels(url, state.report):
                series = self.series.get(name_key(url, endpoint), Series())
                self.details[key] = {"url": url, "endpoint": endpoint, "peer": peer, "path": path}
                kind = str(path.get("kind")) if path else "none"
                if stale:
                    path_cell = Text("stale", style="dim red")
                elif kind == "direct":
                    path_cell = Text("direct", style="bold green")
                elif kind == "relay":
                    path_cell = Text("relay", style="bold yellow")
                else:
                    path_cell = Text(kind, style="dim")
                errors = endpoint.get("refused") or ""
                refusals = _int(endpoint.get("refused_connections"))
                if refusals:
                    errors = f"{errors}; {refusals} refused".lstrip("; ")
                if not errors and peer is None:
                    errors = "no peer"
                elif not errors and path is None:
                    errors = "no path"
                rows.append((key, (
                    short_url(url),
                    f"{endpoint.get('role')} {endpoint.get('name')}",
                    str(endpoint.get("route", "")),
                    self.peer_label(str(peer.get("id"))) if peer else "—",
                    path_cell,
                    str(path.get("addr")) if path else "—",
                    "—" if stale or path is None else _rtt(path.get("rtt")),
                    human_bytes(_bytes(endpoint)),
                    "—" if stale else human_rate(series.rate),
                    sparkline(list(series.rates)[-TREND:]),
                    f"{_int(endpoint.get('active_connections'))}/{_int(endpoint.get('total_connections'))}",
                    str(_int(path.get("active_streams"))) if path else "—",
                    Text(errors, style="red") if errors and errors not in ("no peer", "no path") else errors or "—",
                )))
        return rows

"""The status endpoint: a tiny HTTP/1.1 server beside a component (docs/status.md).

``GET /`` answers the component's ``status()`` as JSON (plus ``version``, ``uptime`` and ``transport``),
``GET /metrics`` the same numbers as Prometheus text (exposition format 0.0.4). Anything
else is 404, any other method 405. One request per connection (``Connection: close``):
the readers are dashboards and scrapers that poll every second or so, and it keeps the server
free of keep-alive state.

It is meant for loopback: there is no authentication, so binding anything else logs a
warning. Each client is bounded in time and size (request head limit, a deadline for the head
and one for the whole exchange), connections are capped per address and overall with the
oldest still-silent ones evicted first (status_admission.py: slowloris from one address, or
from many, cannot starve the others), and each runs in its own task that handles its own
errors, so a slow or garbage client never delays or breaks another one — nor the component
it reports on. Standard library only: the daemons must not pull in a web stack.

Embedding::

    async with TaskGroup() as tg:
        tg.create_task(client.run())
        tg.create_task(serve_status(client, HostPort("127.0.0.1", 19180)))
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Protocol

from connet_core.logs import log_listening
from connet_core.status_udp import relay_udp_metrics, udp_endpoint_metrics
from connet_core.model import HostPort
from connet_core.status_admission import Admission
from connet_core.supervise import TaskGroup

log = logging.getLogger("connet.status")

MAX_HEAD = 8 * 1024  # request line + headers; a status GET needs a few hundred bytes
REQUEST_TIMEOUT = 5.0  # seconds for one whole exchange: read the head, write the answer
HEAD_TIMEOUT = 2.0  # seconds for the request head: a real client sends it at once
MAX_CLIENTS = 64  # concurrent connections (no fd exhaustion); see status_admission.py
MAX_CLIENTS_PER_ADDRESS = 8  # concurrent connections from one IP address
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class StatusSource(Protocol):
    """What the status server reports on: every connet component has this."""

    def status(self) -> dict: ...


class Runnable(StatusSource, Protocol):
    def run(self) -> Awaitable[None]: ...


def connet_version() -> str:
    try:
        return importlib.metadata.version("connet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # running from a source tree that was never installed


def is_loopback(addr: HostPort) -> bool:
    """Whether ``addr`` only accepts connections from this machine. ``""`` is every interface."""
    if addr.host == "localhost":
        return True
    ip = addr.ip()
    return ip is not None and ip.is_loopback


# ---- the HTTP server ---------------------------------------------------------------------


@dataclass
class StatusServer:
    """The status endpoint for ``component`` at ``addr``; ``await serve()`` until cancelled."""

    component: StatusSource
    addr: HostPort
    request_timeout: float = REQUEST_TIMEOUT
    head_timeout: float = HEAD_TIMEOUT
    max_head: int = MAX_HEAD
    max_clients: int = MAX_CLIENTS
    max_clients_per_address: int = MAX_CLIENTS_PER_ADDRESS
    version: str = field(default_factory=connet_version)
    transport: str | None = None  # the QUIC transport the component runs on (``auto`` resolved)
    started: float = field(default_factory=time.monotonic)
    local_address: HostPort | None = None
    bound: asyncio.Event = field(default_factory=asyncio.Event)
    _admission: Admission = field(init=False)
    _tg: asyncio.TaskGroup | None = None

    def __post_init__(self) -> None:
        self._admission = Admission(self.max_clients, self.max_clients_per_address)

    @property
    def _clients(self) -> int:
        """Connections in progress."""
        return len(self._admission)

    async def serve(self) -> None:
        if not is_loopback(self.addr):
            log.warning(
                "status endpoint %s is not on loopback: it has no authentication, anyone who reaches it "
                "sees this component's peers and addresses", self.addr,
            )
        async with TaskGroup() as tg:
            self._tg = tg
            server = await asyncio.start_server(
                self._accepted,
                self.addr.host or None,  # "" is every interface; asyncio wants None for that
                self.addr.port,
                limit=self.max_head,
                reuse_address=True,
            )
            try:
                self.local_address = _bound_address(server.sockets)
                log_listening(log, "status", "tcp", self.local_address)
                self.bound.set()
                await server.serve_forever()
            finally:
                server.close()
                self._tg = None

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback, so asyncio does not make an orphan task: the exchange belongs to our group
        tg = self._tg
        admission = self._admission
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if tg is None:
            writer.transport.abort()
            return
        admitted, evicted = admission.admit(writer, address)
        for old in evicted:  # still silent, and the oldest: the one an attacker is likeliest to hold
            old.transport.abort()  # type: ignore[attr-defined]  # its task sees EOF and ends
        if not admitted:
            writer.transport.abort()
            return
        try:
            tg.create_task(self._exchange(reader, writer))
        except RuntimeError:  # the group is shutting down: the server is stopping
            admission.release(writer)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, close. Every failure here stays here."""
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    async with asyncio.timeout(self.head_timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    status, ctype, body = _error(431)
                except asyncio.IncompleteReadError:
                    return  # the client went away (or was evicted) before finishing its request
                else:
                    self._admission.head_received(writer)
                    status, ctype, body = self._answer(head)
                writer.write(_response(status, ctype, body))
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # a slow client: its deadline is up, drop it unanswered
        except (ConnectionError, OSError):
            writer.transport.abort()  # the client reset or broke the connection: nothing to tell it
        finally:
            self._admission.release(writer)
            writer.close()  # after an answer: flushes what drain() left, then closes

    def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        try:
            method, target = _parse_request_line(head)
        except ValueError:
            return _error(400)
        path = target.split("?", 1)[0]
        if path not in ("/", "/metrics"):
            return _error(404)
        if method != "GET":
            return _error(405)
        try:
            report = self.report()
            if path == "/metrics":
                return 200, METRICS_CONTENT_TYPE, render_metrics(report).encode()
            return 200, "application/json", json.dumps(report, indent=1, default=str).encode() + b"\n"
        except Exception:  # noqa: BLE001 - a bug in a status() or here must not take the component down
            log.exception("status report for %s failed", path)
            return _error(500)

    def report(self) -> dict[str, Any]:
        """The component's status with what every endpoint adds."""
        report = {
            **self.component.status(),
            "version": self.version,
            "uptime": round(time.monotonic() - self.started, 3),
        }
        if self.transport is not None:
            report["transport"] = self.transport
        return report


def _bound_address(sockets: tuple[socket.socket, ...] | list[socket.socket]) -> HostPort:
    name = sockets[0].getsockname()
    return HostPort(name[0], name[1])


def _parse_request_line(head: bytes) -> tuple[str, str]:
    """``(method, target)`` of an HTTP/1.x request head; ValueError if it is not one."""
    line = head.split(b"\r\n", 1)[0].decode("ascii")  # UnicodeDecodeError is a ValueError
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise ValueError(f"not an HTTP/1.x request line: {line[:80]!r}")
    method, target, _ = parts
    if not method.isalpha() or not method.isupper():
        raise ValueError(f"bad method {method[:20]!r}")
    return method, target


def _error(code: int) -> tuple[int, str, bytes]:
    return code, "text/plain; charset=utf-8", f"{code} {_REASONS[code]}\n".encode()


def _response(code: int, content_type: str, body: bytes) -> bytes:
    headers = [
        f"HTTP/1.1 {code} {_REASONS[code]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if code == 405:
        headers.append("Allow: GET")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body


async def serve_status(component: StatusSource, addr: HostPort, transport: str | None = None) -> None:
    """Serve ``component``'s status at ``addr`` until cancelled (for embedders); ``transport``
    names the QUIC transport in every report."""
    await StatusServer(component, addr, transport=transport).serve()


async def run_with_status(component: Runnable, addr: HostPort | None, transport: str | None = None) -> None:
    """Run ``component``; with an address, its status endpoint beside it in one task group.
    The endpoint stops when the component returns; an error in either stops both."""
    if addr is None:
        await component.run()
        return
    async with TaskGroup() as tg:
        status = tg.create_task(serve_status(component, addr, transport))
        await component.run()
        status.cancel()


# ---- Prometheus text ---------------------------------------------------------------------


@dataclass
class _Family:
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class MetricsBuilder:
    """Collects samples per metric family and writes exposition format 0.0.4."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help: str, value: object, /, **labels: object) -> None:
        number = _number(value)
        if number is None:
            return  # absent or not a number in this status: no sample rather than a wrong one
        family = self.families.setdefault(name, _Family(kind, help))
        family.samples.append(({k: "" if v is None else str(v) for k, v in labels.items()}, number))

    def render(self) -> str:
        lines: list[str] = []
        for name, family in self.families.items():
            lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.kind}")
            for labels, value in family.samples:
                text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{text}}} {_format(value)}" if text else f"{name} {_format(value)}")
        return "\n".join(lines) + "\n"


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def render_metrics(report: dict[str, Any]) -> str:
    """Prometheus text for a status report (any role). The names are listed in docs/status.md."""
    m = MetricsBuilder()
    role = str(report.get("role", "unknown"))
    m.add("connet_info", "gauge", "Always 1; the labels say what this process is.", 1,
          role=role, version=report.get("version", "unknown"), transport=report.get("transport", "unknown"))
    m.add("connet_uptime_seconds", "gauge", "Seconds since the status endpoint started.", report.get("uptime"))
    if role == "client":
        _client_metrics(m, report)
    elif role == "control":
        _control_metrics(m, report)
    elif role == "relay":
        _relay_metrics(m, report)
    elif role == "server":
        if isinstance(report.get("control"), dict):
            _control_metrics(m, report["control"])
        if isinstance(report.get("relay"), dict):
            _relay_metrics(m, report["relay"])
    # a server's hooks are its control part's (the built-in relay makes no plugin decisions)
    control = report.get("control") if role == "server" and isinstance(report.get("control"), dict) else report
    for entry in _items(control.get("plugin_errors")):
        m.add("connet_plugin_errors_total", "counter",
              "Hook calls that failed in a plugin (raised, wrong result, timed out); each refused one request.",
              entry.get("count"), plugin=entry.get("plugin"), hook=entry.get("hook"))
    return m.render()


def _counter_metrics(m: MetricsBuilder, prefix: str, counters: object) -> None:
    """Event counters an engine lists under ``counters`` (e.g. auth rejections, handshake
    failures): each becomes ``connet_<role>_<key>_total``, so new ones need no change here."""
    if not isinstance(counters, dict):
        return
    for key, value in counters.items():
        name = "".join(c if c.isalnum() else "_" for c in str(key)).lower()
        m.add(f"connet_{prefix}_{name}_total", "counter", f"Count of {key} events.", value)


def _items(value: object) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _client_metrics(m: MetricsBuilder, report: dict[str, Any]) -> None:
    control = report.get("control") if isinstance(report.get("control"), dict) else {}
    m.add("connet_client_control_connected", "gauge", "1 while the session with the control server is up.",
          bool(control.get("connected")))
    for endpoint in _items(report.get("endpoints")):
        ident = {"name": endpoint.get("name"), "role": endpoint.get("role")}
        m.add("connet_client_endpoint_refused", "gauge",
              "1 if control refused this destination or source (see the status JSON for why).",
              endpoint.get("refused") is not None, **ident)
        m.add("connet_client_endpoint_connections_active", "gauge", "TCP connections being tunneled now.",
              endpoint.get("active_connections"), **ident)
        m.add("connet_client_endpoint_connections_total", "counter", "TCP connections tunneled since start.",
              endpoint.get("total_connections"), **ident)
        m.add("connet_client_endpoint_bytes_in_total", "counter",
              "Bytes read from local TCP connections and sent into the tunnel.", endpoint.get("bytes_in"), **ident)
        m.add("connet_client_endpoint_bytes_out_total", "counter",
              "Bytes received from the tunnel and written to local TCP connections.",
              endpoint.get("bytes_out"), **ident)
        peers = _items(endpoint.get("peers"))
        m.add("connet_client_endpoint_peers", "gauge", "Peers control matched with this endpoint.", len(peers), **ident)
        by_kind = {"direct": 0, "relay": 0}
        for peer in peers:
            for path in _items(peer.get("paths")):
                kind = str(path.get("kind"))
                by_kind[kind] = by_kind.get(kind, 0) + 1
                labels = {**ident, "peer": peer.get("id"), "kind": kind, "addr": path.get("addr")}
                m.add("connet_client_path_rtt_seconds", "gauge", "Smoothed RTT of the path's QUIC connection.",
                      path.get("rtt"), **labels)
                m.add("connet_client_path_bytes_sent_total", "counter",
                      "Bytes the path's QUIC connection sent (shared by the names that use it).",
                      path.get("bytes_sent"), **labels)
                m.add("connet_client_path_bytes_received_total", "counter",
                      "Bytes the path's QUIC connection received (shared by the names that use it).",
                      path.get("bytes_received"), **labels)
                m.add("connet_client_path_active_streams", "gauge", "Tunneled streams open on the path.",
                      path.get("active_streams"), **labels)
        for kind, count in by_kind.items():
            m.add("connet_client_paths", "gauge", "Paths up to this endpoint's peers, by kind.", count,
                  **ident, kind=kind)
        udp_endpoint_metrics(m, endpoint, ident)
    _counter_metrics(m, "client", report.get("counters"))


def _control_metrics(m: MetricsBuilder, report: dict[str, Any]) -> None:
    clients = _items(report.get("clients"))
    m.add("connet_control_clients", "gauge", "Clients with a control session.", len(clients))
    m.add("connet_control_relays", "gauge", "Relays clients are offered (built-in and registered).",
          len(_items(report.get("relays"))))
    names = report.get("names")
    m.add("connet_control_names", "gauge", "Names announced by at least one client.",
          len(names) if isinstance(names, (list, dict)) else None)
    announced = {"destination": 0, "source": 0}
    for client in clients:
        for entry in client.get("announced") or []:
            role = str(entry).partition(":")[0]
            announced[role] = announced.get(role, 0) + 1
    for role, count in announced.items():
        m.add("connet_control_announcements", "gauge", "Announced destinations and sources, by role.", count,
              role=role)
    _counter_metrics(m, "control", report.get("counters"))


def _relay_metrics(m: MetricsBuilder, report: dict[str, Any]) -> None:
    m.add("connet_relay_registered", "gauge", "1 once the relay holds a grant key from control.",
          report.get("registered"))
    m.add("connet_relay_control_connected", "gauge", "1 while a stand-alone relay is registered with control.",
          report.get("control_connected"))
    m.add("connet_relay_clients", "gauge", "Clients connected to the relay.", len(_items(report.get("clients"))))
    m.add("connet_relay_bytes_total", "counter", "Bytes spliced between sources and destinations.",
          report.get("bytes_relayed"))
    m.add("connet_relay_streams_active", "gauge", "Streams being relayed now.", report.get("streams_active"))
    m.add("connet_relay_streams_total", "counter", "Streams relayed since start.", report.get("streams_total"))
    m.add("connet_relay_streams_refused_total", "counter", "Stream requests the relay refused.",
          report.get("streams_refused"))
    relay_udp_metrics(m, report)
    _counter_metrics(m, "relay", report.get("counters"))

"""The status endpoints of real processes: JSON valid against docs/schemas, metrics as documented."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.cluster import ServerInfo, start_destination, start_server, start_source
from support.daemons import Daemon, Daemons
from support.services import echo_server, exchange_through

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas"
LOCAL = "127.0.0.1:0"


# ---- a validator for the JSON Schema subset docs/schemas use ------------------------------

ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}


class SchemaError(AssertionError):
    pass


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def validate(value: Any, schema: dict, root: dict, where: str = "$") -> None:
    """Raise SchemaError naming the first place ``value`` breaks ``schema``. A keyword this
    validator does not know is an error too, so the schemas cannot promise more than is checked."""
    unknown = set(schema) - ANNOTATIONS - {
        "type", "enum", "properties", "required", "additionalProperties", "items", "minimum", "$ref", "oneOf",
    }
    if unknown:
        raise SchemaError(f"{where}: the test validator does not know {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/$defs/"):
            validate(value, root["$defs"][ref.removeprefix("#/$defs/")], root, where)
        else:
            other = load_schema(ref)
            validate(value, other, other, where)
    if "oneOf" in schema:
        matched = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, root, where)
                matched += 1
            except SchemaError:
                continue
        if matched != 1:
            raise SchemaError(f"{where}: {value!r:.80} matches {matched} of oneOf, not exactly 1")
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, TYPES[n]) and not (isinstance(value, bool) and n in ("integer", "number"))
            for n in names
        )
        if not ok:
            raise SchemaError(f"{where}: {value!r:.80} is not of type {names}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema["minimum"]:
            raise SchemaError(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise SchemaError(f"{where}: missing required {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], root, f"{where}.{key}")
            elif extra is False:
                raise SchemaError(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            validate(item, schema["items"], root, f"{where}[{index}]")


def check_schema(value: Any, name: str) -> None:
    schema = load_schema(name)
    validate(value, schema, schema)


# ---- Prometheus text ----------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition format 0.0.4 -> name -> samples; any malformed line fails the test."""
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter"), line
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
        else:
            match = SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            name = match.group(1)
            assert name in types, f"{name}: a sample before its TYPE line"
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples.setdefault(name, []).append((labels, float(match.group(3))))
    return samples


def documented_metrics() -> set[str]:
    """The metric names docs/status.md lists (in backticks, in its metrics tables)."""
    return set(re.findall(r"^\| `(connet_[a-z_]+)`", (DOCS / "status.md").read_text(), re.MULTILINE))


# ---- the processes ------------------------------------------------------------------------


def status_url(daemon: Daemon) -> str:
    host, port = daemon.listening("status", "tcp")
    return f"http://{host}:{port}/"


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.headers["Content-Type"], response.read()


def fetch_json(url: str) -> dict:
    content_type, body = fetch(url)
    assert content_type == "application/json"
    return json.loads(body)


def paths(report: dict, kind: str) -> list[dict]:
    return [p for e in report["endpoints"] for peer in e["peers"] for p in peer["paths"] if p["kind"] == kind]


@pytest.fixture
def status_server(daemons: Daemons, certs: Path) -> ServerInfo:
    return start_server(daemons, certs, status_addr=LOCAL)


async def test_live_status_matches_the_schemas_and_shows_the_direct_path(status_server, daemons) -> None:
    server = status_server
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, status_addr=LOCAL)
        src, source_port = start_source(daemons, server, route="direct", status_addr=LOCAL)
        _, dst_direct = dst.listening("direct")
        _, src_direct = src.listening("direct")
        src.wait_for(r"peer \S+ connected direct")
        dst.wait_for(r"peer \S+ connected direct")
        assert await exchange_through(source_port, b"x" * 50_000) == b"x" * 50_000
        assert await exchange_through(source_port, b"y") == b"y"
        urls = {d.name: status_url(d) for d in (server.daemon, dst, src)}
        src_report, dst_report, server_report = (fetch_json(urls[n]) for n in ("src", "dst", "server"))

    check_schema(src_report, "client.json")
    check_schema(dst_report, "client.json")
    check_schema(server_report, "server.json")
    # the default transport is "auto", and qh3 is a dependency: every daemon says it runs qh3
    assert [r["transport"] for r in (src_report, dst_report, server_report)] == ["qh3"] * 3

    # the source's path names the destination's own direct socket, and the other way round
    # (a set: while both ends' dials race, the loser is listed until it closes)
    assert {p["addr"] for p in paths(src_report, "direct")} == {f"127.0.0.1:{dst_direct}"}
    assert {p["addr"] for p in paths(dst_report, "direct")} == {f"127.0.0.1:{src_direct}"}
    assert src_report["direct_addr"] == f"127.0.0.1:{src_direct}"
    assert src_report["control"]["connected"] is True
    (source,) = src_report["endpoints"]
    assert (source["name"], source["role"], source["route"]) == ("web", "source", "direct")
    assert source["addr"] == f"127.0.0.1:{source_port}"
    assert source["bytes_in"] >= 50_000 and source["bytes_out"] >= 50_000
    assert source["total_connections"] >= 2
    assert paths(src_report, "direct")[0]["rtt"] is not None
    announced = sorted(a for c in server_report["control"]["clients"] for a in c["announced"])
    assert announced == ["destination:web", "source:web"]
    assert server_report["control"]["names"] == {"web": {"destination": 1, "source": 1}}


@pytest.mark.parametrize("chosen", ["aioquic", "qh3"])
def test_the_transport_in_use_is_in_the_status_and_the_metrics(daemons, certs, monkeypatch, chosen) -> None:
    monkeypatch.setenv("CONNET_TRANSPORT", chosen)  # the root key `transport`, for this daemon
    server = start_server(daemons, certs, status_addr=LOCAL)
    assert fetch_json(status_url(server.daemon))["transport"] == chosen
    _, body = fetch(status_url(server.daemon) + "metrics")
    (labels, value), = parse_metrics(body.decode())["connet_info"]
    assert (labels["transport"], labels["role"], value) == (chosen, "server", 1.0)


async def test_metrics_parse_and_use_only_documented_names(status_server, daemons) -> None:
    server = status_server
    documented = documented_metrics()
    assert len(documented) > 20, "docs/status.md lists the metric names in tables"
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, status_addr=LOCAL)
        src, source_port = start_source(daemons, server, status_addr=LOCAL)
        src_url = status_url(src)
        # a round trip proves a kept path (the loser of the dial race may close right after the log line)
        assert await exchange_through(source_port, b"m") == b"m"
    for url in (status_url(server.daemon), status_url(dst), src_url):
        content_type, body = fetch(url + "metrics")
        assert content_type.startswith("text/plain; version=0.0.4")
        metrics = parse_metrics(body.decode())
        undocumented = set(metrics) - documented
        assert not undocumented, f"{url}metrics: not in docs/status.md: {sorted(undocumented)}"
        assert metrics["connet_uptime_seconds"][0][1] >= 0
    metrics = parse_metrics(fetch(src_url + "metrics")[1].decode())
    direct = [v for labels, v in metrics["connet_client_paths"] if labels["kind"] == "direct"]
    assert len(direct) == 1 and direct[0] >= 1
    assert metrics["connet_client_control_connected"] == [({}, 1.0)]
    server_metrics = parse_metrics(fetch(status_url(server.daemon) + "metrics")[1].decode())
    assert server_metrics["connet_control_clients"] == [({}, 2.0)]
    assert server_metrics["connet_relay_registered"] == [({}, 1.0)]


def test_unknown_paths_and_methods(status_server) -> None:
    url = status_url(status_server.daemon)
    with pytest.raises(urllib.error.HTTPError) as missing:
        fetch(url + "nothing-here")
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as posted:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
    assert posted.value.code == 405


def test_a_relayed_tunnel_shows_a_relay_path(status_server, daemons) -> None:
    server = status_server
    start_destination(daemons, server, 9)
    src, _ = start_source(daemons, server, route="relay", status_addr=LOCAL)
    src.wait_for(r"relay \S+ connected")
    # the relay link and the peer's match arrive in separate control messages
    deadline = time.monotonic() + 10
    report = fetch_json(status_url(src))
    while not paths(report, "relay") and time.monotonic() < deadline:
        time.sleep(0.1)
        report = fetch_json(status_url(src))
    check_schema(report, "client.json")
    relay_port = server.daemon.listening("relay")[1]
    assert [p["addr"].rpartition(":")[2] for p in paths(report, "relay")] == [str(relay_port)]
    assert not paths(report, "direct")


def test_the_validator_rejects_what_the_schema_forbids() -> None:
    good = {
        "role": "client", "version": "1", "uptime": 1.0, "transport": "qh3", "control": {"addr": "a:1", "connected": True},
        "observed_addr": None, "direct_addr": "a:2",
        "endpoints": [{"name": "w", "role": "source", "route": "any", "addr": "a:3", "refused": None,
                       "peers": [{"id": "x", "paths": [{"kind": "direct", "addr": "b:1", "rtt": None,
                                                         "bytes_sent": 0, "bytes_received": 0,
                                                         "active_streams": 0}]}],
                       "bytes_in": 0, "bytes_out": 0, "active_connections": 0, "total_connections": 0}],
    }
    check_schema(good, "client.json")
    bad_kind = json.loads(json.dumps(good))
    bad_kind["endpoints"][0]["peers"][0]["paths"][0]["kind"] = "carrier-pigeon"
    bad_count = json.loads(json.dumps(good))
    bad_count["endpoints"][0]["bytes_in"] = -1
    missing = json.loads(json.dumps(good))
    del missing["endpoints"][0]["peers"][0]["paths"][0]["rtt"]
    for bad in (bad_kind, bad_count, missing, {**good, "uptime": True}):
        with pytest.raises(SchemaError):
            check_schema(bad, "client.json")
    with pytest.raises(SchemaError):
        check_schema({"role": "server", "version": "1", "uptime": 0, "transport": "qh3", "control": {}, "relay": None}, "server.json")

"""The status endpoint in-process: answers, error codes, hostile clients, metrics text."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest

from connet_core.errors import ConfigError
from connet_core.model import HostPort
from connet_core.status import StatusServer, is_loopback, render_metrics, run_with_status

CLIENT_STATUS = {
    "role": "client",
    "control": {"addr": "127.0.0.1:19190", "connected": True},
    "observed_addr": "127.0.0.1:40000",
    "direct_addr": "127.0.0.1:40000",
    "endpoints": [
        {
            "name": "web",
            "role": "source",
            "route": "any",
            "addr": "127.0.0.1:8080",
            "refused": None,
            "peers": [
                {
                    "id": "0123456789ab",
                    "paths": [
                        {"kind": "direct", "addr": "127.0.0.1:40001", "rtt": 0.002, "dialed": True,
                         "bytes_sent": 100, "bytes_received": 200, "active_streams": 1},
                        {"kind": "relay", "addr": "localhost:19191", "rtt": 0.004,
                         "bytes_sent": 10, "bytes_received": 20, "active_streams": 0},
                    ],
                }
            ],
            "bytes_in": 1000,
            "bytes_out": 2000,
            "active_connections": 1,
            "total_connections": 7,
        }
    ],
}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


class Fake:
    def __init__(self, report: dict) -> None:
        self.report = report
        self.broken = False

    def status(self) -> dict:
        if self.broken:
            raise KeyError("a bug in status()")
        return self.report


@asynccontextmanager
async def running(component: Fake, **options: object) -> AsyncIterator[StatusServer]:
    server = StatusServer(component, HostPort("127.0.0.1", 0), **options)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(server.serve())
        await server.bound.wait()  # if serve() fails first, the group cancels this wait
        try:
            yield server
        finally:
            task.cancel()


async def request(server: StatusServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    assert server.local_address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address.port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text -> name -> labels -> value; fails on any line that is not valid."""
    types: dict[str, str] = {}
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter"), line
            assert name not in types, f"two TYPE lines for {name}"
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group(1)
        assert name in types, f"{name} has no TYPE line before it"
        assert types[name] != "counter" or name.endswith("_total")
        labels = tuple(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples.setdefault(name, {})[labels] = float(match.group(3))
    return samples


async def test_get_root_is_the_status_json_with_version_and_uptime() -> None:
    async with running(Fake(CLIENT_STATUS)) as server:
        code, headers, body = await request(server, get("/"))
    assert code == 200
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)
    assert {k: v for k, v in report.items() if k not in ("version", "uptime")} == CLIENT_STATUS
    assert isinstance(report["version"], str) and report["uptime"] >= 0


async def test_metrics_are_prometheus_text_from_the_status() -> None:
    async with running(Fake(CLIENT_STATUS)) as server:
        code, headers, body = await request(server, get("/metrics?x=1"))
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    metrics = parse_metrics(body.decode())
    ident = (("name", "web"), ("role", "source"))
    assert metrics["connet_client_control_connected"][()] == 1
    assert metrics["connet_client_paths"][(*ident, ("kind", "direct"))] == 1
    assert metrics["connet_client_paths"][(*ident, ("kind", "relay"))] == 1
    assert metrics["connet_client_endpoint_connections_total"][ident] == 7
    assert metrics["connet_client_endpoint_bytes_out_total"][ident] == 2000
    direct = (*ident, ("peer", "0123456789ab"), ("kind", "direct"), ("addr", "127.0.0.1:40001"))
    assert metrics["connet_client_path_rtt_seconds"][direct] == 0.002
    assert metrics["connet_client_path_active_streams"][direct] == 1


def test_server_metrics_cover_control_relay_and_counters() -> None:
    report = {
        "role": "server",
        "uptime": 3.5,
        "version": "1",
        "control": {"clients": [{"addr": "a", "principal": "p", "announced": ["source:x", "destination:x"]}],
                    "relays": [{"addr": "r", "builtin": True}], "names": {"x": {"source": 1}},
                    "counters": {"auth-failed": 3}},
        "relay": {"registered": True, "clients": [], "bytes_relayed": 5, "streams_active": 0, "streams_total": 2},
    }
    metrics = parse_metrics(render_metrics(report))
    assert metrics["connet_control_clients"][()] == 1
    assert metrics["connet_control_announcements"][(("role", "source"),)] == 1
    assert metrics["connet_control_auth_failed_total"][()] == 3
    assert metrics["connet_relay_bytes_total"][()] == 5
    assert metrics["connet_info"][(("role", "server"), ("version", "1"), ("transport", "unknown"))] == 1


def test_label_values_are_escaped() -> None:
    report = {**CLIENT_STATUS, "endpoints": [{**CLIENT_STATUS["endpoints"][0], "name": 'a"b\\c\nd'}]}
    metrics = parse_metrics(render_metrics(report))
    assert (("name", 'a\\"b\\\\c\\nd'), ("role", "source")) in metrics["connet_client_endpoint_peers"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (get("/nope"), 404),
        (get("/", "POST"), 405),
        (get("/metrics", "DELETE"), 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * 20_000 + b"\r\n\r\n", 431),
        (b"\xff\xfe / HTTP/1.1\r\n\r\n", 400),
    ],
)
async def test_error_codes(raw: bytes, code: int) -> None:
    async with running(Fake(CLIENT_STATUS)) as server:
        got, headers, _ = await request(server, raw)
        assert got == code
        if code == 405:
            assert headers["Allow"] == "GET"
        # and the server still answers the next client
        assert (await request(server, get("/")))[0] == 200


async def test_a_slow_client_is_dropped_and_never_delays_others() -> None:
    async with running(Fake(CLIENT_STATUS), request_timeout=0.5) as server:
        assert server.local_address is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address.port)
        writer.write(b"GET / HT")  # and then nothing more
        await writer.drain()
        started = asyncio.get_running_loop().time()
        assert (await request(server, get("/")))[0] == 200
        assert asyncio.get_running_loop().time() - started < 0.4  # not after the slow one
        # the slow one is cut at its deadline without an answer
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_too_many_clients_are_refused_until_some_leave() -> None:
    async with running(Fake(CLIENT_STATUS), max_clients=2) as server:
        assert server.local_address is not None
        idle = [await asyncio.open_connection("127.0.0.1", server.local_address.port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.local_address.port)
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass  # an abort may arrive as a reset: refused either way
        writer.close()
        for _, w in idle:
            w.close()
        # their handlers see EOF and leave; then there is room again
        for r, _ in idle:
            await asyncio.wait_for(r.read(), 5)
        while server._clients:
            await asyncio.sleep(0)  # the handlers finish on the loop's next turns
        assert (await request(server, get("/")))[0] == 200


async def test_a_failing_status_answers_500_and_the_server_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    fake = Fake(CLIENT_STATUS)
    async with running(fake) as server:
        fake.broken = True
        assert (await request(server, get("/")))[0] == 500
        assert (await request(server, get("/metrics")))[0] == 500
        fake.broken = False
        assert (await request(server, get("/")))[0] == 200
    assert "status report for / failed" in caplog.text


async def test_listening_line_names_the_bound_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "connet.status")
    async with running(Fake(CLIENT_STATUS)) as server:
        assert server.local_address is not None
        port = server.local_address.port
    assert port != 0
    assert f"listening status tcp 127.0.0.1:{port}" in caplog.text
    assert "no authentication" not in caplog.text  # loopback: no warning


@pytest.mark.parametrize(
    ("addr", "loopback"),
    [("127.0.0.1:1", True), ("127.9.9.9:1", True), ("[::1]:1", True), ("localhost:1", True),
     (":1", False), ("0.0.0.0:1", False), ("[::]:1", False), ("192.0.2.1:1", False), ("example.org:1", False),
     ("[::ffff:127.0.0.1]:1", True)],
)
def test_is_loopback(addr: str, loopback: bool) -> None:
    assert is_loopback(HostPort.parse(addr)) is loopback


class Runs(Fake):
    def __init__(self, error: BaseException | None = None) -> None:
        super().__init__(CLIENT_STATUS)
        self.error = error

    async def run(self) -> None:
        if self.error is not None:
            raise self.error


async def test_run_with_status_ends_with_the_component() -> None:
    await asyncio.wait_for(run_with_status(Runs(), HostPort("127.0.0.1", 0)), 5)
    await asyncio.wait_for(run_with_status(Runs(), None), 5)


async def test_run_with_status_passes_the_components_error_on() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(run_with_status(Runs(ConfigError("bad")), HostPort("127.0.0.1", 0)), 5)
    assert caught.group_contains(ConfigError)
    with pytest.raises(ConfigError):
        await run_with_status(Runs(ConfigError("bad")), None)

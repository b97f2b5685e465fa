"""PROXY protocol toward the destination's service: a real nginx that requires it logs
``$proxy_protocol_addr:$proxy_protocol_port``, which must be the address the test's client
connected from at the source, for v1 and v2, direct and through the relay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from support.cluster import TOKENS, ServerInfo
from support.daemons import Daemons
from support.lbcluster import http_get_from, nginx_with_proxy_protocol, start_client
from support.programs import need_program

# the client connects to the source from this loopback address, not the 127.0.0.1 every
# connet process uses: nginx can only have learned it from the header
CLIENT_HOST = "127.0.0.77"


def wait_logged(log: Path, lines: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        got = log.read_text().splitlines() if log.exists() else []
        if len(got) >= lines or time.monotonic() > deadline:
            return got
        time.sleep(0.05)  # nginx writes its access log line after answering


@pytest.mark.parametrize("route", ["direct", "relay"])
def test_nginx_logs_the_source_side_client_address(route: str, daemons: Daemons, server: ServerInfo,
                                                    tmp_path: Path) -> None:
    need_program("nginx")
    with nginx_with_proxy_protocol(tmp_path / "nginx") as (nginx_port, access_log):
        destinations = "".join(
            f'[client.destinations.pp-{version}]\naddr = "127.0.0.1:{nginx_port}"\nroute = "{route}"\n'
            f'proxy-proto-version = "{version}"\n' for version in ("v1", "v2")
        )
        sources = "".join(
            f'[client.sources.pp-{version}]\naddr = "127.0.0.1:0"\nroute = "{route}"\n' for version in ("v1", "v2")
        )
        start_client(daemons, server, "dst", TOKENS[0], destinations)
        src = start_client(daemons, server, "src", TOKENS[1], sources)
        source_ports = [int(src.wait_for(r"listening source tcp \S+:(\d+)", count=n).group(1)) for n in (1, 2)]
        src.wait_for(r"peer \S+ connected direct" if route == "direct" else r"relay \S+ connected")

        async def requests() -> list[tuple[str, tuple[str, int]]]:
            answers = []
            for port in source_ports:
                answer = ""
                for _ in range(100):  # until the destination's match reached the source
                    try:
                        answer, origin = await http_get_from(CLIENT_HOST, port)
                    except ConnectionError:
                        answer = ""  # refused (reset): no path yet
                    if "200 OK" in answer:
                        answers.append((answer, origin))
                        break
                    await asyncio.sleep(0.1)  # a refused connection: the path is not up yet
                else:
                    raise AssertionError(f"no answer through source port {port}: {answer!r}")
            return answers

        answers = asyncio.run(requests())
        for answer, _ in answers:
            assert "hello from nginx" in answer
        logged = wait_logged(access_log, len(answers))
        # only successful requests reach the log: nginx refuses a connection without a header
        assert logged[-2:] == [f"{host}:{port}" for _, (host, port) in answers]
        assert all(line.startswith(CLIENT_HOST + ":") for line in logged[-2:])
        if route == "relay":
            assert "via relay path" in src.log()

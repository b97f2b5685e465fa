"""A new user's first hour (issue 18): the original connet's quick start verbatim, the
messages a first setup runs into, and a quiet info log. Real processes on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from support.cluster import TOKENS, start_destination, start_server, start_source
from support.daemons import Daemons
from support.services import fetch_with_retry, http_server, wait_tunnel

# The original connet's quick start, verbatim but for SERVER_IP. Its ports (19190, 3000, 8000)
# are swapped for free ones by ``_ports`` below: other tests run on this machine at once.
SEED_DESTINATION = """\
[client]
token = "client-token-1"
server-addr = "SERVER_IP:19190"
server-cas = "cert.pem"

[client.destinations.serviceA]
addr = ":3000"
"""
SEED_SOURCE = """\
[client]
token = "client-token-2"
server-addr = "SERVER_IP:19190"
server-cas = "cert.pem"

[client.sources.serviceA]
addr = ":8000"
"""


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free right now (bound and released): for files that must name a fixed port."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ports(text: str, mapping: dict[int, int]) -> str:
    for old, new in mapping.items():
        text = text.replace(f":{old}\"", f":{new}\"")
    return text


def _info_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " INFO " in line]


def test_the_original_quick_start_verbatim_carries_a_page(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    control_port = free_port(socket.SOCK_DGRAM)
    server_config = daemons.workdir / "server.toml"
    server_config.write_text(
        "[server]\n"
        f'tokens = ["client-token-1", "client-token-2"]\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f'addr = "127.0.0.1:{control_port}"\n'
        'relay-addr = "127.0.0.1:0"\n'
    )
    server = daemons.start("server", ["server", "--config", str(server_config)])
    server.listening("control")
    clients = tmp_path / "clients"
    clients.mkdir()
    shutil.copy(certs / "ca.pem", clients / "cert.pem")
    site = tmp_path / "site"
    site.mkdir()
    page = os.urandom(4096).hex()
    (site / "index.html").write_text(page)
    source_port = free_port()  # the source listens on every interface: on a port free now
    direct_port = free_port(socket.SOCK_DGRAM, "0.0.0.0")
    with http_server(str(site)) as http_port:
        ports = {19190: control_port, 3000: http_port, 8000: source_port}
        destination_file = clients / "destination.toml"
        destination_file.write_text(_ports(SEED_DESTINATION.replace("SERVER_IP", "127.0.0.1"), ports))
        source_file = clients / "source.toml"
        # two clients on one machine: the second one needs its own direct-addr
        source_file.write_text(
            _ports(SEED_SOURCE.replace("SERVER_IP", "127.0.0.1"), ports)
            .replace('server-cas = "cert.pem"\n', f'server-cas = "cert.pem"\ndirect-addr = ":{direct_port}"\n')
        )
        # the first keeps the default direct-addr's every-interface bind, on a port free now
        first_direct = free_port(socket.SOCK_DGRAM, "0.0.0.0")
        dst = daemons.start("dst", ["--config", str(destination_file)],
                            env={"CONNET_CLIENT__DIRECT_ADDR": f":{first_direct}"})
        src = daemons.start("src", ["--config", str(source_file)])
        # up first, then the page: a connection made while the paths are still coming up
        # may be refused (and say so in a warning), which is not what this test is about
        for daemon in (dst, src):
            daemon.wait_for(r"peer \S+ connected direct", 30)
            daemon.wait_for(r"relay \S+ connected", 30)
        body = fetch_with_retry(f"http://127.0.0.1:{source_port}/index.html")
        assert hashlib.sha256(body.encode()).hexdigest() == hashlib.sha256(page.encode()).hexdigest()
        # The healthy start at info level: a handful of lines that each say what is up, once:
        # version and transport, listening (direct; the source's TCP too), connected to
        # control, the peer matched, the relay, the peer's direct path.
        for name, daemon, expected in (("dst", dst, 6), ("src", src, 7), ("server", server, 10)):
            lines = _info_lines(daemon.log())
            print(f"--- {name} info lines ---", *lines, sep="\n")
            assert not [line for line in daemon.log().splitlines() if " WARNING " in line or " ERROR " in line]
            if expected is not None:
                assert len(lines) == expected, lines
        assert dst.stop() == 0 and src.stop() == 0
    assert server.stop() == 0


def test_a_second_client_on_the_same_direct_addr_names_the_key(daemons: Daemons, server) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        client = daemons.start("second", [
            "--token", TOKENS[0], "--server-addr", f"127.0.0.1:{server.control_port}",
            "--server-cas", str(server.certs / "ca.pem"), "--direct-addr", f"127.0.0.1:{port}",
            "--dst-name", "web", "--dst-addr", "127.0.0.1:1",
        ])
        assert client.proc.wait(20) == 1
        client._reader.join(5)
    log = client.log()
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if line.startswith("connet: error:")]
    assert len(errors) == 1, log
    assert "direct-addr" in errors[0] and "Address already in use" in errors[0], errors[0]


@pytest.mark.parametrize("transport", ["qh3", "aioquic"])
def test_a_client_without_server_cas_gets_a_hint(daemons: Daemons, server, transport: str) -> None:
    client = daemons.start("client", [
        "--token", TOKENS[0], "--server-addr", f"127.0.0.1:{server.control_port}",
        "--direct-addr", "127.0.0.1:0", "--dst-name", "web", "--dst-addr", "127.0.0.1:1",
        "--transport", transport, "--log-level", "debug",
    ])
    line = client.wait_for(r"cannot reach control server .*").group(0)
    assert "set server-cas" in line, line
    # retried, the same failure is a debug line: said once at info level
    client.wait_for(r"DEBUG .*cannot reach control server .*", count=1)
    lines = client.log().splitlines()
    assert len([x for x in lines if re.search("WARNING .*cannot reach control server", x)]) == 1, lines
    # the QUIC library's own warning of the same failure is a debug line
    assert not [x for x in lines if " quic: " in x and " DEBUG " not in x], client.log()


def test_temporary_store_directories_are_removed_at_exit(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    server = start_server(daemons, certs, env={"TMPDIR": str(tmpdir)})
    server.daemon.listening("relay")
    made = sorted(p.name.rsplit("-", 1)[0] for p in tmpdir.iterdir())
    assert made == ["connet-control", "connet-relay"]  # the test sees what it expects removed
    assert server.daemon.stop() == 0
    assert list(tmpdir.iterdir()) == []


async def test_a_service_that_resets_is_reported_as_a_reset(daemons: Daemons, server) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(5)
        if data == b"probe":
            writer.write(data)  # wait_tunnel's probe gets its echo
            await writer.drain()
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # an RST, as a crashing service sends

    service = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = service.sockets[0].getsockname()[1]
        start_destination(daemons, server, port)
        src, source_port = start_source(daemons, server)
        await wait_tunnel(source_port)
        mark = src.mark()
        reader, writer = await asyncio.open_connection("127.0.0.1", source_port)
        writer.write(b"reset me")
        await writer.drain()
        try:
            with pytest.raises(ConnectionResetError):  # the program at the source sees a reset too
                await asyncio.wait_for(reader.read(), 15)
        finally:
            writer.close()
        line = src.wait_for(r"tunneled connection .*", start=mark).group(0)
        assert "reset by the program at the other end" in line, line
    finally:
        service.close()
        await service.wait_closed()


def test_a_server_restart_says_each_change_once(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    """A server restart without store-dir (a new relay certificate on the same address): the
    client's info log says lost, reconnected, the old relay gone and the new one up, each once,
    not a warning per retry (issue 18)."""
    control_port, relay_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "server.toml"
    config.write_text(
        "[server]\n"
        f'tokens = ["{TOKENS[0]}"]\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f'addr = "127.0.0.1:{control_port}"\n'
        f'relay-addr = "127.0.0.1:{relay_port}"\n'
        'relay-hostname = "127.0.0.1"\n'
    )
    server = daemons.start("server", ["server", "--config", str(config)])
    server.listening("relay")
    client = daemons.start("client", [
        "--token", TOKENS[0], "--server-addr", f"127.0.0.1:{control_port}",
        "--server-cas", str(certs / "ca.pem"), "--direct-addr", "127.0.0.1:0",
        "--dst-name", "web", "--dst-addr", "127.0.0.1:1", "--log-level", "debug",
    ])
    client.wait_for(r"relay \S+ connected")
    mark = client.mark()
    assert server.stop() == 0
    # the server stays away for two failed relay dials (debug lines count them)
    client.wait_for(r"cannot reach relay", start=mark, count=2, timeout=30)
    again = daemons.start("server-again", ["server", "--config", str(config)])
    again.listening("relay")
    client.wait_for(r"relay \S+ connected", start=mark, timeout=30)
    # the old relay's entry goes (its address is offered again, with the new certificate)
    client.wait_for(r"is no longer offered \(offered again with a new certificate", start=mark, timeout=30)
    lines = [line for line in client.lines[mark:] if " DEBUG " not in line]  # what info level shows
    relay_warnings = [line for line in lines if " WARNING " in line and "relay" in line]
    assert len(relay_warnings) <= 1, "\n".join(lines)  # the outage, once
    assert len([line for line in lines if "connected to control server" in line]) == 1, "\n".join(lines)
    assert not [line for line in lines if "no longer offered" in line], "\n".join(lines)
    assert len([line for line in lines if re.search(r"relay \S+ connected", line)]) == 1, "\n".join(lines)

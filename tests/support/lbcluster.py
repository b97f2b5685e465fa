"""Clients configured by file (for the keys without flags: proxy-proto-version, lb-policy,
...), a real nginx with the PROXY protocol, and small identifying services: what the load
balancing and PROXY protocol e2e tests start."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

from support.cluster import ServerInfo
from support.daemons import Daemon, Daemons
from support.programs import need_program


def client_config(path: Path, server: ServerInfo, token: str, body: str, *, status_addr: str | None = None) -> Path:
    status = f'status-addr = "{status_addr}"\n' if status_addr else ""
    path.write_text(
        "[client]\n"
        f'token = "{token}"\n'
        f'server-addr = "127.0.0.1:{server.control_port}"\n'
        f'server-cas = "{server.certs / "ca.pem"}"\n'
        'direct-addr = "127.0.0.1:0"\n' + status + body
    )
    return path


def start_client(daemons: Daemons, server: ServerInfo, name: str, token: str, body: str, **kwargs) -> Daemon:
    config = client_config(daemons.workdir / f"{name}.toml", server, token, body, **kwargs)
    return daemons.start(name, ["--config", str(config), "--log-level", "debug"])


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    log_format origin '$proxy_protocol_addr:$proxy_protocol_port';
    access_log {root}/access.log origin;
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
"""


@contextmanager
def nginx_with_proxy_protocol(root: Path) -> Iterator[tuple[int, Path]]:
    """A real nginx (not daemonized, its own prefix, pid and logs under ``root``) that
    requires the PROXY protocol on its one listener; yields its port and its access log,
    one ``$proxy_protocol_addr:$proxy_protocol_port`` line per request."""
    binary = need_program("nginx")
    root.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:  # up once it accepts (it binds before it serves)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                                         f"{(root / 'error.log').read_text() if (root / 'error.log').exists() else ''}")
                time.sleep(0.05)  # polling a port that is not open yet
        yield port, root / "access.log"
    finally:
        proc.kill()
        proc.wait()


async def http_get_from(local_host: str, port: int) -> tuple[str, tuple[str, int]]:
    """GET / through 127.0.0.1:``port`` from a socket bound to ``local_host``: the answer and
    the (host, port) the request came from."""
    sock = socket.socket()
    sock.bind((local_host, 0))
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    origin = sock.getsockname()
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        return (await reader.read()).decode(errors="replace"), origin
    finally:
        writer.close()


@asynccontextmanager
async def named_echo(label: bytes, delay: float = 0.0) -> AsyncIterator[int]:
    """An echo service that answers ``label`` + newline first, then every byte back (after
    ``delay`` seconds: the slow destination)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)  # the slowness under test, not a wait for an event
            writer.write(label + b"\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()

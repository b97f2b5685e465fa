"""Several ``connet control`` processes sharing state through a real Redis, each through its
own TCP proxy (so one can be cut off), a ``connet relay`` registered with one of them, and
clients given the whole address list: the deployment of docs/scaling.md on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from support.cluster import RELAY_TOKEN, TOKENS
from support.daemons import Daemon, Daemons
from support.redis_server import RedisServer, TcpProxy

EXPIRY = 3.0  # seconds: short, so the tests see expiry; the default is 10
REFRESH = 0.5


@dataclass
class Instance:
    name: str
    daemon: Daemon
    port: int
    status: str
    proxy: TcpProxy
    tcp_port: int | None = None  # control over TLS-over-TCP (``tcp-addr``), when asked for

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tcp_addr(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    def report(self) -> dict:
        with urllib.request.urlopen(self.status, timeout=5) as response:
            return json.loads(response.read())


def start_instance(daemons: Daemons, certs: Path, redis: RedisServer, name: str, *, tcp: bool = False) -> Instance:
    proxy = TcpProxy(redis.port)
    tokens = ", ".join(f'"{t}"' for t in TOKENS)
    config = daemons.workdir / f"{name}.toml"
    config.write_text(
        "[control]\n"
        'addr = "127.0.0.1:0"\n'
        + ('tcp-addr = "127.0.0.1:0"\n' if tcp else "")
        + 'status-addr = "127.0.0.1:0"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f"client-tokens = [{tokens}]\n"
        f'relay-tokens = ["{RELAY_TOKEN}"]\n'
        "[plugins.redis]\n"
        f'url = "{proxy.url}"\n'
        f"expiry = {EXPIRY}\n"
        f'refresh-interval = {REFRESH}\n'
    )
    daemon = daemons.start(name, ["control", "--config", str(config), "--log-level", "debug"])
    _, port = daemon.listening("control", "udp")
    tcp_port = daemon.listening("control", "tcp")[1] if tcp else None
    host, status_port = daemon.listening("status", "tcp")
    return Instance(name, daemon, port, f"http://{host}:{status_port}/", proxy, tcp_port)


def start_relay(daemons: Daemons, certs: Path, instances: list[Instance], extra: str = "") -> Daemon:
    """The relay's control-addr is a TOML array: the first instance, then the others.
    ``extra``: more ``[relay]`` lines."""
    addrs = ", ".join(f'"{i.addr}"' for i in instances)
    config = daemons.workdir / "relay.toml"
    config.write_text(
        "[relay]\n"
        f'token = "{RELAY_TOKEN}"\n'
        'addr = "127.0.0.1:0"\n'
        'hostname = "127.0.0.1"\n'
        f"control-addr = [{addrs}]\n"
        f'control-cas = "{certs / "ca.pem"}"\n'
        'control-name = "localhost"\n'
        + extra
    )
    daemon = daemons.start("relay", ["relay", "--config", str(config), "--log-level", "debug"])
    daemon.wait_for("registered with control server")
    return daemon


def client_args(certs: Path, token: str, instances: list[Instance]) -> list[str]:
    """The address list as one comma-separated flag (the first instance is tried first)."""
    return ["--token", token, "--server-addr", ",".join(i.addr for i in instances),
            "--server-cas", str(certs / "ca.pem"), "--server-name", "localhost", "--direct-addr", "127.0.0.1:0",
            "--log-level", "debug"]


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` held (polled: it reads status JSON over HTTP)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def clients_on(instance: Instance) -> set[str]:
    return {c["addr"] for c in instance.report()["clients"]}

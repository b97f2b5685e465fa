"""A control server and clients as real processes, the way the e2e tests start them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from support.daemons import Daemon, Daemons

TOKENS = ["token-dst", "token-src", "token-third"]


@dataclass
class ServerInfo:
    daemon: Daemon
    control_port: int
    config: Path
    certs: Path

    def client_args(self, token: str) -> list[str]:
        return [
            "--token", token,
            "--server-addr", f"127.0.0.1:{self.control_port}",
            "--server-cas", str(self.certs / "ca.pem"),
            "--direct-addr", "127.0.0.1:0",
            "--log-level", "debug",
        ]


def write_server_config(path: Path, certs: Path, *, addr: str = "127.0.0.1:0", store_dir: Path | None = None,
                        status_addr: str | None = None) -> Path:
    tokens = ", ".join(f'"{t}"' for t in TOKENS)
    store = f'store-dir = "{store_dir}"\n' if store_dir else ""
    if status_addr is not None:
        store += f'status-addr = "{status_addr}"\n'
    path.write_text(
        "[server]\n"
        f'addr = "{addr}"\n'
        'relay-addr = "127.0.0.1:0"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f"tokens = [{tokens}]\n" + store
    )
    return path


def start_server(daemons: Daemons, certs: Path, *, name: str = "server", addr: str = "127.0.0.1:0",
                 store_dir: Path | None = None, status_addr: str | None = None,
                 env: dict[str, str] | None = None) -> ServerInfo:
    config = write_server_config(daemons.workdir / f"{name}.toml", certs, addr=addr, store_dir=store_dir,
                                 status_addr=status_addr)
    daemon = daemons.start(name, ["server", "--config", str(config), "--log-level", "debug"], env=env)
    _, port = daemon.listening("control", "udp")
    return ServerInfo(daemon, port, config, certs)


def start_destination(daemons: Daemons, server: ServerInfo, target_port: int, *, name: str = "dst",
                      endpoint: str = "web", route: str = "any", token: str = TOKENS[0],
                      status_addr: str | None = None, env: dict[str, str] | None = None) -> Daemon:
    args = [*server.client_args(token), "--dst-name", endpoint, "--dst-addr", f"127.0.0.1:{target_port}",
            "--dst-route", route]
    if status_addr is not None:
        args += ["--status-addr", status_addr]
    return daemons.start(name, args, env=env)


def start_source(daemons: Daemons, server: ServerInfo, *, name: str = "src", endpoint: str = "web",
                 route: str = "any", token: str = TOKENS[1], status_addr: str | None = None,
                 env: dict[str, str] | None = None) -> tuple[Daemon, int]:
    args = [*server.client_args(token), "--src-name", endpoint, "--src-addr", "127.0.0.1:0", "--src-route", route]
    if status_addr is not None:
        args += ["--status-addr", status_addr]
    daemon = daemons.start(name, args, env=env)
    _, port = daemon.listening("source", "tcp")
    return daemon, port


RELAY_TOKEN = "relay-token"


def start_control(daemons: Daemons, certs: Path, *, name: str = "control", addr: str = "127.0.0.1:0",
                  store_dir: Path | None = None) -> ServerInfo:
    """``connet control`` on its own, accepting relays with RELAY_TOKEN."""
    tokens = ", ".join(f'"{t}"' for t in TOKENS)
    store = f'store-dir = "{store_dir}"\n' if store_dir else ""
    config = daemons.workdir / f"{name}.toml"
    config.write_text(
        "[control]\n"
        f'addr = "{addr}"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        f"client-tokens = [{tokens}]\n"
        f'relay-tokens = ["{RELAY_TOKEN}"]\n' + store
    )
    daemon = daemons.start(name, ["control", "--config", str(config), "--log-level", "debug"])
    _, port = daemon.listening("control", "udp")
    return ServerInfo(daemon, port, config, certs)


def relay_config(path: Path, control: ServerInfo, *, addr: str = "127.0.0.1:0", store_dir: Path | None = None) -> Path:
    store = f'store-dir = "{store_dir}"\n' if store_dir else ""
    path.write_text(
        "[relay]\n"
        f'token = "{RELAY_TOKEN}"\n'
        f'addr = "{addr}"\n'
        'hostname = "127.0.0.1"\n'
        f'control-addr = "127.0.0.1:{control.control_port}"\n'
        f'control-cas = "{control.certs / "ca.pem"}"\n' + store
    )
    return path


def start_relay(daemons: Daemons, control: ServerInfo, *, name: str = "relay", addr: str = "127.0.0.1:0",
                store_dir: Path | None = None) -> tuple[Daemon, int]:
    config = relay_config(daemons.workdir / f"{name}.toml", control, addr=addr, store_dir=store_dir)
    daemon = daemons.start(name, ["relay", "--config", str(config), "--log-level", "debug"])
    _, port = daemon.listening("relay", "udp")
    return daemon, port


def free_udp_port() -> int:
    """A port that was free a moment ago, for a restart that must come back on the same port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def relayed_bytes(relay: Daemon) -> int:
    return sum(int(m) for m in re.findall(r"relayed a stream for 'web': (\d+) bytes", relay.log()))

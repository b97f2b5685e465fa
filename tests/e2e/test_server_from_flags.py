"""``connet server`` configured by flags alone (no --config file): clients connect to it and
bytes cross the tunnel intact."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from support.cluster import TOKENS, ServerInfo, start_destination, start_source
from support.daemons import Daemons
from support.services import echo_server, exchange, sha256, wait_tunnel


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return json.load(response)


async def test_server_from_flags_alone_serves_clients(daemons: Daemons, certs: Path) -> None:
    args = ["server", "--addr", "127.0.0.1:0", "--relay-addr", "127.0.0.1:0", "--status-addr", "127.0.0.1:0",
            "--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server-key.pem"),
            "--ip-restriction-allow-cidrs", "127.0.0.0/8", "--log-level", "debug"]
    for token in TOKENS:
        args += ["--tokens", token]
    daemon = daemons.start("server", args)
    _, control_port = daemon.listening("control", "udp")
    _, status_port = daemon.listening("status", "tcp")
    server = ServerInfo(daemon, control_port, certs / "no-config-file.toml", certs)
    async with echo_server() as echo_port:
        start_destination(daemons, server, echo_port, token=TOKENS[0])
        _, source_port = start_source(daemons, server, token=TOKENS[1])
        await wait_tunnel(source_port)
        payload = os.urandom(1 << 20)
        assert sha256(await exchange(source_port, payload)) == sha256(payload)
        # the status JSON (from --status-addr) lists both clients, admitted by the flags' tokens
        report = status(status_port)
    announced = sorted(a for c in report["control"]["clients"] for a in c["announced"])
    assert announced == ["destination:web", "source:web"]

"""A relayed peer that restarts again and again (each run has a new certificate) leaves
nothing behind in the client that stays up: once control has withdrawn a run and its grace
is over, its end-to-end TLS contexts are gone too (``relay_tls_contexts`` in the status)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

from support.cluster import TOKENS, ServerInfo
from support.daemons import Daemon, Daemons
from support.services import echo_server, exchange, sha256, wait_tunnel

RESTARTS = 30
# a gone peer is forgotten 10 s after control withdrew it (UNMATCHED_GRACE), checked every second
FORGOTTEN_WITHIN = 30.0


def relay_tls_contexts(daemon: Daemon) -> int:
    host, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        return json.loads(response.read())["relay_tls_contexts"]


def start_client(daemons: Daemons, server: ServerInfo, name: str, token: str, *, source: str, destination: str,
                 echo_port: int, status: bool = False) -> tuple[Daemon, int]:
    """A client that is the source of one name and the destination of the other, relay only,
    so that it runs end-to-end TLS on both sides: client for its source, server for its
    destination. Returns it and its source port."""
    args = [*server.client_args(token),
            "--src-name", source, "--src-addr", "127.0.0.1:0", "--src-route", "relay",
            "--dst-name", destination, "--dst-addr", f"127.0.0.1:{echo_port}", "--dst-route", "relay"]
    if status:
        args += ["--status-addr", "127.0.0.1:0"]
    daemon = daemons.start(name, args)
    return daemon, daemon.listening("source", "tcp")[1]


async def test_restarts_of_a_relayed_peer_do_not_grow_the_tls_cache(server: ServerInfo, daemons: Daemons) -> None:
    async with echo_server() as echo_port:
        stays, up_port = start_client(daemons, server, "stays", TOKENS[1], source="up", destination="down",
                                      echo_port=echo_port, status=True)
        for run in range(RESTARTS):
            restarts, down_port = start_client(daemons, server, f"restarts-{run}", TOKENS[0], source="down",
                                               destination="up", echo_port=echo_port)
            await wait_tunnel(up_port)  # stays -> this run: stays is the TLS client
            await wait_tunnel(down_port)  # this run -> stays: stays is the TLS server
            if run < RESTARTS - 1:
                assert restarts.stop() == 0
        # each run left two contexts; the runs that are gone must take theirs along, the
        # running one keeps its two
        deadline = time.monotonic() + FORGOTTEN_WITHIN
        cached = await asyncio.to_thread(relay_tls_contexts, stays)
        while cached != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # polling the status field the test is about
            cached = await asyncio.to_thread(relay_tls_contexts, stays)
        assert cached == 2, f"{cached} TLS contexts cached after {RESTARTS} runs of one peer (2 expected)"
        # the live peer's tunnels were not disturbed by forgetting the others
        payload = os.urandom(1 << 20)
        for port in (up_port, down_port):
            assert sha256(await exchange(port, payload)) == sha256(payload)

"""Misbehaving plugins against real daemons: a plugin installed by entry point raises or
returns the wrong thing for one peer; that peer alone is refused, the daemon keeps serving
a checksummed transfer, and the failures are counted in the status report and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import pytest

from support.cluster import TOKENS, start_destination, start_server, start_source
from support.daemons import Daemon
from support.plugin_dist import plugin_on_path
from support.services import echo_server, exchange, exchange_through, sha256, wait_tunnel

LOCAL = "127.0.0.1:0"

MISBEHAVING = """
    import asyncio
    import os
    import sys
    import time

    from connet_core import hookimpl
    from connet_core.model import PathCandidate, Principal

    @hookimpl
    async def connet_authenticate(kind, token):
        if token == "token-raises":
            raise RuntimeError("the directory is down")
        if token == "token-wrong-type":
            return "yes"  # not a Principal
        if token == "token-hangs":
            await asyncio.Event().wait()  # a directory that never answers
        if token == "token-slow":
            await asyncio.sleep(0.5)  # slow, within the limit: accepted
            return Principal(kind, label="slow-but-fine")
        return None  # the tokens plugin decides

    @hookimpl
    def connet_authorize(principal, address, name, role):
        if name == "raises-here":
            raise KeyError(name)
        if name == "sleeps-here":  # a synchronous client library waiting on a server that is slow
            print("misbehaving: blocking in connet_authorize", file=sys.stderr, flush=True)
            release, deadline = os.environ["MISBEHAVING_RELEASE"], time.monotonic() + 30
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
            open(release + ".ended", "w").close()
        return None

    @hookimpl
    def connet_select_routes(name, local_policy, remote_policy, candidates):
        if name == "routes-raise":
            raise ZeroDivisionError("no route today")
        # equal but new objects, as a plugin that rebuilds its answer returns them
        return [PathCandidate(c.kind, c.peer, c.relay, c.rtt) for c in candidates]
"""


def status(daemon: Daemon) -> dict:
    host, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        return json.load(response)


def metrics(daemon: Daemon) -> str:
    host, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_a_failing_plugin_refuses_one_peer_and_the_daemons_keep_serving(daemons, certs, tmp_path: Path):
    env = plugin_on_path(tmp_path / "site", "misbehaving", "misbehaving_plugin", MISBEHAVING)
    server = start_server(daemons, certs, status_addr=LOCAL, env=env)
    server.daemon.wait_for(r"listening status tcp")
    async with echo_server() as echo_port:
        start_destination(daemons, server, echo_port, env=env)
        src, source_port = start_source(daemons, server, status_addr=LOCAL, env=env)
        await wait_tunnel(source_port)  # through the route plugin's equal-but-new paths

        # a token the plugin raises for, one it answers wrongly for: each refused alone
        mark = server.daemon.mark()
        start_destination(daemons, server, echo_port, name="raises", endpoint="other", token="token-raises")
        start_destination(daemons, server, echo_port, name="wrong", endpoint="other", token="token-wrong-type")
        server.daemon.wait_for(r"client \S+ refused: plugin 'misbehaving' failed in connet_authenticate: "
                               r"raised RuntimeError: the directory is down", start=mark)
        server.daemon.wait_for(r"client \S+ refused: plugin 'misbehaving' failed in connet_authenticate: "
                               r"returned str, expected a Principal or a Veto or None", start=mark)
        # one that hangs is refused at the time limit; a slow one is served; neither holds the loop
        start_destination(daemons, server, echo_port, name="hangs", endpoint="other", token="token-hangs")
        start_destination(daemons, server, echo_port, name="slow", endpoint="slow", token="token-slow")
        server.daemon.wait_for(r"client \S+ connected \(slow-but-fine\)", start=mark)
        hung = asyncio.ensure_future(exchange_through(source_port, b"alongside" * 1000))
        assert await hung == b"alongside" * 1000  # while the hanging plugin is awaited
        server.daemon.wait_for(r"client \S+ refused: plugin 'misbehaving' failed in connet_authenticate: "
                               r"timed out after 5s", start=mark)
        # an announcement the plugin raises for: that one refused, its session kept
        announcer = start_destination(daemons, server, echo_port, name="announcer", endpoint="raises-here",
                                      token=TOKENS[2])
        server.daemon.wait_for(r"may not announce destination 'raises-here': plugin 'misbehaving' failed "
                               r"in connet_authorize: raised KeyError", start=mark)
        announcer.wait_for(r"control refused destination 'raises-here': internal-error")

        # a source whose route plugin raises: that TCP connection is reset, the listener stays
        start_destination(daemons, server, echo_port, name="dst-raise", endpoint="routes-raise", token=TOKENS[0])
        src_raise, raise_port = start_source(daemons, server, name="src-raise", endpoint="routes-raise",
                                             status_addr=LOCAL, env=env)
        for _ in range(2):
            mark_src = src_raise.mark()
            with pytest.raises((ConnectionError, OSError)):  # reset, not an empty answer
                assert await exchange(raise_port, b"x" * 1000) == b"x" * 1000
            src_raise.wait_for(r"source 'routes-raise': refusing a connection: plugin 'misbehaving' failed in "
                               r"connet_select_routes: raised ZeroDivisionError: no route today", start=mark_src)
        assert src_raise.proc.poll() is None
        assert {(e["plugin"], e["hook"]) for e in status(src_raise)["plugin_errors"]} == {
            ("misbehaving", "connet_select_routes")}

        # the tunnel through the same daemons carries every byte
        payload = os.urandom(4 << 20)
        received = await exchange_through(source_port, payload)
        assert sha256(received) == sha256(payload)

    assert server.daemon.proc.poll() is None and src.proc.poll() is None
    report = status(server.daemon)["control"]
    errors = {(e["plugin"], e["hook"]): e["count"] for e in report["plugin_errors"]}
    assert errors[("misbehaving", "connet_authenticate")] >= 3
    assert errors[("misbehaving", "connet_authorize")] >= 1
    assert report["counters"]["plugin_errors"] == sum(errors.values())
    # the announcer's session outlived its refused announcement
    assert any(c["principal"] == "token#2" for c in report["clients"])
    assert 'connet_plugin_errors_total{plugin="misbehaving",hook="connet_authorize"}' in metrics(server.daemon)
    # the route plugin's copies were used, not counted as failures
    assert status(src)["plugin_errors"] == []


async def test_a_sync_hook_that_blocks_holds_no_transfer_and_is_refused_at_the_limit(daemons, certs, tmp_path: Path):
    """The plugin's plain-function connet_authorize sleeps until the test releases it, which
    the test does only after a checksummed transfer relayed by the same server has finished:
    run on the event loop, the hook would hold the transfer (and itself) until its 30 s end."""
    release = tmp_path / "release"
    env = plugin_on_path(tmp_path / "site", "misbehaving", "misbehaving_plugin", MISBEHAVING)
    server = start_server(daemons, certs, status_addr=LOCAL, env={**env, "MISBEHAVING_RELEASE": str(release)})
    server.daemon.wait_for(r"listening status tcp")
    try:
        async with echo_server() as echo_port:
            # relayed: the bytes pass through the server whose plugin blocks
            start_destination(daemons, server, echo_port, route="relay")
            _, source_port = start_source(daemons, server, route="relay")
            await wait_tunnel(source_port)

            mark = server.daemon.mark()
            sleeper = start_destination(daemons, server, echo_port, name="sleeper", endpoint="sleeps-here",
                                        token=TOKENS[2])
            server.daemon.wait_for(r"misbehaving: blocking in connet_authorize", start=mark)
            payload = os.urandom(4 << 20)
            received = await exchange_through(source_port, payload)
            assert sha256(received) == sha256(payload)
            assert not (tmp_path / "release.ended").exists()  # done while the hook still blocks
            server.daemon.wait_for(r"may not announce destination 'sleeps-here': plugin 'misbehaving' failed "
                                   r"in connet_authorize: timed out after 5s", start=mark)
            sleeper.wait_for(r"control refused destination 'sleeps-here': internal-error")
            release.touch()
            # and the tunnel still carries every byte after
            payload = os.urandom(1 << 20)
            assert sha256(await exchange_through(source_port, payload)) == sha256(payload)
    finally:
        release.touch()
    assert server.daemon.proc.poll() is None
    errors = {(e["plugin"], e["hook"]): e["count"] for e in status(server.daemon)["control"]["plugin_errors"]}
    assert errors == {("misbehaving", "connet_authorize"): 1}
    assert 'connet_plugin_errors_total{plugin="misbehaving",hook="connet_authorize"} 1' in metrics(server.daemon)

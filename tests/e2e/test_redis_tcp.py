"""Several control instances behind one real Redis, seen by a client whose UDP is blocked
(``udp = "never"``): its ``server-tcp-addr`` list pairs with its ``server-addr`` list by
position, and a relay registered with another instance reaches it with its TCP address and
its ``metadata`` through the shared state (docs/scaling.md, docs/udp-blocked.md)."""

from __future__ import annotations

import os
import signal

import pytest

from support.cluster import TOKENS
from support.daemons import Daemons
from support.redis_deployment import Instance, client_args, eventually, start_instance, start_relay
from support.redis_server import RedisServer
from support.services import echo_server, exchange_through, sha256, wait_tunnel
from test_status import check_schema, fetch_json, paths

LOCAL = "127.0.0.1:0"


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def deployment(daemons: Daemons, certs, redis):
    instances = [start_instance(daemons, certs, redis, f"control{n}", tcp=True) for n in (1, 2, 3)]
    yield instances
    for instance in instances:
        instance.proxy.stop()


def report(daemon) -> dict:
    host, port = daemon.listening("status", "tcp")
    return fetch_json(f"http://{host}:{port}/")


def blocked_source(daemons: Daemons, certs, instances: list[Instance]):
    """A source that uses TCP only: instance n's TCP address is the n-th of the list."""
    args = [*client_args(certs, TOKENS[1], instances), "--server-tcp-addr", ",".join(i.tcp_addr for i in instances),
            "--udp", "never", "--src-name", "web", "--src-addr", LOCAL, "--src-route", "relay",
            "--status-addr", LOCAL]
    src = daemons.start("src", args)
    return src, src.listening("source", "tcp")[1]


def sessions(instance: Instance) -> int:
    return len(instance.report()["clients"])


async def test_a_tcp_only_client_finds_a_relay_of_another_instance_and_moves_to_the_paired_tcp_address(
        daemons, certs, deployment) -> None:
    c1, c2, c3 = deployment
    # the relay registers with control1 only, with a label and a TCP address
    relay = start_relay(daemons, certs, [c1], extra='tcp-addr = "127.0.0.1:0"\nmetadata = "rack 7"\n')
    relay.listening("relay", "tcp")
    async with echo_server() as echo_port:
        dst = daemons.start("dst", [*client_args(certs, TOKENS[0], [c2]), "--dst-name", "web",
                                    "--dst-addr", f"127.0.0.1:{echo_port}", "--dst-route", "relay"])
        src, port = blocked_source(daemons, certs, [c3, c2])
        await wait_tunnel(port, timeout=30)
        payload = os.urandom(1 << 20)
        assert sha256(await exchange_through(port, payload)) == sha256(payload)
        # control3 offers control1's relay with what it registered
        (offered,) = c3.report()["relays"]
        assert (offered["metadata"], offered["instance"] is not None) == ("rack 7", True)
        check_schema(c3.report(), "control.json")
        status = report(src)
        assert status["control"]["carrier"] == "tcp" and sessions(c3) == 1
        # over TCP: the relay's TCP address came from control1 through Redis to control3
        assert [p["carrier"] for p in paths(status, "relay")] == ["tcp"]

        # control3 dies: the source moves to control2, over control2's TCP address (the 2nd)
        c3.daemon.proc.send_signal(signal.SIGKILL)
        c3.daemon.kill()
        eventually(lambda: sessions(c2) == 2, 30, "the source is on control2")
        eventually(lambda: report(src)["control"]["connected"], 10, "the source's session is up")
        assert report(src)["control"]["carrier"] == "tcp"
        assert sha256(await exchange_through(port, payload)) == sha256(payload)

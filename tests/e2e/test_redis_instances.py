"""Three ``connet control`` instances behind one real Redis (plain loopback processes, each
talking to Redis through its own TCP proxy), a relay registered with the first, a
destination on the second and a source on the third: a page through the tunnel, then each
failure of docs/scaling.md's table."""

from __future__ import annotations

import os
import signal

import pytest

from support.cluster import TOKENS
from support.daemons import Daemons
from support.redis_deployment import (
    EXPIRY,
    REFRESH,
    Instance,
    client_args,
    clients_on,
    eventually,
    start_instance,
    start_relay,
)
from support.redis_server import RedisServer
from support.services import echo_server, exchange_through, sha256, wait_tunnel
from test_status import check_schema, documented_metrics, fetch, parse_metrics



@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def deployment(daemons: Daemons, certs, redis):
    instances = [start_instance(daemons, certs, redis, f"control{n}") for n in (1, 2, 3)]
    yield instances
    for instance in instances:
        instance.proxy.stop()


def start_pair(daemons: Daemons, certs, instances: list[Instance], echo_port: int, route: str = "relay"):
    c1, c2, c3 = instances
    dst = daemons.start("dst", [*client_args(certs, TOKENS[0], [c2, c1, c3]), "--dst-name", "web",
                                "--dst-addr", f"127.0.0.1:{echo_port}", "--dst-route", route])
    src = daemons.start("src", [*client_args(certs, TOKENS[1], [c3, c1, c2]), "--src-name", "web",
                                "--src-addr", "127.0.0.1:0", "--src-route", route])
    _, port = src.listening("source", "tcp")
    return dst, src, port


def names(instance: Instance) -> dict:
    return instance.report()["names"].get("web", {})


async def test_a_source_and_a_destination_on_two_instances_meet_through_a_relay_on_a_third(
        daemons, certs, deployment) -> None:
    c1, c2, c3 = deployment
    start_relay(daemons, certs, deployment)  # registers with c1
    async with echo_server() as echo_port:
        dst, src, port = start_pair(daemons, certs, deployment, echo_port)
        await wait_tunnel(port, timeout=30)
        payload = os.urandom(1 << 20)
        assert sha256(await exchange_through(port, payload)) == sha256(payload)
    # each client is on its own instance; each instance's Matcher holds both through Redis
    assert len(c2.report()["clients"]) == 1 and len(c3.report()["clients"]) == 1 and not c1.report()["clients"]
    for instance in deployment:
        assert names(instance) == {"destination": 1, "source": 1}
        state = instance.report()["shared_state"]
        assert (state["backend"], state["healthy"], state["instances"]) == ("redis", True, 3)
    # the relay registered with c1 only; c3 hands it out with grants the relay accepts
    (relay,) = c3.report()["relays"]
    assert relay["instance"] is not None and relay["builtin"] is False
    check_schema(c3.report(), "control.json")
    _, text = fetch(c3.status + "metrics")
    assert set(parse_metrics(text.decode())) <= documented_metrics()


async def test_a_killed_instance_its_clients_move_and_its_announcements_expire(daemons, certs, deployment) -> None:
    c1, c2, c3 = deployment
    start_relay(daemons, certs, deployment)
    async with echo_server() as echo_port:
        dst, src, port = start_pair(daemons, certs, deployment, echo_port, route="any")
        await wait_tunnel(port, timeout=30)
        dst_addr = next(iter(clients_on(c2)))
        c2.daemon.proc.send_signal(signal.SIGKILL)  # no goodbye: only the expiry tells the others
        c2.daemon.kill()
        payload = os.urandom(256 * 1024)
        # the tunnel never depended on control: it carries data while the destination moves
        assert sha256(await exchange_through(port, payload)) == sha256(payload)
        eventually(lambda: dst_addr in clients_on(c1), 15, "the destination reconnected to control1")
        # c3 first sees the new announcement beside the dead instance's, then only the new one
        took = eventually(lambda: names(c3) == {"destination": 1, "source": 1}, EXPIRY + 4 * REFRESH + 5,
                          "control2's announcement expired from control3")
        assert took <= EXPIRY + 2 * REFRESH + 3  # the bound docs/scaling.md states, with slack for load
        assert c3.report()["shared_state"]["instances"] == 2
        assert sha256(await exchange_through(port, payload)) == sha256(payload)


async def test_a_restarted_redis_drops_no_client_and_gets_everything_again(daemons, certs, deployment, redis) -> None:
    c1, c2, c3 = deployment
    async with echo_server() as echo_port:
        dst, src, port = start_pair(daemons, certs, deployment, echo_port, route="any")
        await wait_tunnel(port, timeout=30)
        before = {i.name: clients_on(i) for i in deployment}
        rewrites = {i.name: i.report()["shared_state"]["counters"]["rewrites"] for i in deployment}
        redis.restart()  # empty: no save, no append-only file
        for instance in deployment:
            eventually(lambda: instance.report()["shared_state"]["counters"]["rewrites"] > rewrites[instance.name]
                       and instance.report()["shared_state"]["healthy"], 15, f"{instance.name} re-published")
        assert {i.name: clients_on(i) for i in deployment} == before  # nobody was dropped
        for instance in deployment:
            eventually(lambda: names(instance) == {"destination": 1, "source": 1}, 10, "the view rebuilt")
        # a new source on the instance that held nothing is matched with the old destination
        src2 = daemons.start("src2", [*client_args(certs, TOKENS[2], [c1, c2, c3]), "--src-name", "web",
                                      "--src-addr", "127.0.0.1:0"])
        _, port2 = src2.listening("source", "tcp")
        payload = os.urandom(128 * 1024)
        assert sha256(await exchange_through(port2, payload)) == sha256(payload)


async def test_an_instance_cut_off_from_redis_refuses_new_clients_then_lets_its_own_go(
        daemons, certs, deployment) -> None:
    c1, c2, c3 = deployment
    async with echo_server() as echo_port:
        dst, src, port = start_pair(daemons, certs, deployment, echo_port, route="any")
        await wait_tunnel(port, timeout=30)
        src_addr = next(iter(clients_on(c3)))
        c3.proxy.pause()  # c3's Redis connections stall; c1 and c2 are unaffected
        try:
            eventually(lambda: not c3.report()["shared_state"]["healthy"], 10, "control3 noticed the partition")
            # a new client trying c3 first is refused (unavailable) and lands on c1
            late = daemons.start("late", [*client_args(certs, TOKENS[2], [c3, c1]), "--src-name", "web",
                                          "--src-addr", "127.0.0.1:0"])
            late.listening("source", "tcp")
            eventually(lambda: c3.report()["counters"]["unavailable"] >= 1, 15, "control3 refused the new client")
            eventually(lambda: len(c1.report()["clients"]) == 1, 15, "the new client went to control1")
            # past the expiry the others have forgotten c3's clients: c3 lets them go elsewhere
            eventually(lambda: src_addr not in clients_on(c3) and not c3.report()["clients"], EXPIRY + 10,
                       "control3 closed its sessions")
            eventually(lambda: src_addr in clients_on(c1) | clients_on(c2), 15, "the source moved")
            payload = os.urandom(128 * 1024)
            assert sha256(await exchange_through(port, payload)) == sha256(payload)
        finally:
            c3.proxy.resume()
        eventually(lambda: c3.report()["shared_state"]["healthy"], 10, "control3 healed")


async def test_a_relay_whose_instance_is_killed_registers_with_the_next_and_keeps_relaying(
        daemons, certs, deployment) -> None:
    c1, c2, c3 = deployment
    relay = start_relay(daemons, certs, deployment)  # registered with c1
    async with echo_server() as echo_port:
        dst, src, port = start_pair(daemons, certs, deployment, echo_port)  # route relay
        await wait_tunnel(port, timeout=30)
        mark = relay.mark()
        c1.daemon.kill()
        relay.wait_for("registered with control server", start=mark, timeout=20)
        # c2 now has the relay as its own; c3 learns it from c2 (after c1's copy expires)
        eventually(lambda: [r["instance"] for r in c2.report()["relays"]] == [None], 15, "c2 holds the relay")
        eventually(lambda: len(c3.report()["relays"]) == 1, EXPIRY + 10, "c3 offers it once")
        payload = os.urandom(256 * 1024)
        assert sha256(await exchange_through(port, payload)) == sha256(payload)
        # a new relayed pair after the move: grants from c3 are valid on the relay c2 registered
        src2 = daemons.start("src2", [*client_args(certs, TOKENS[2], [c3, c2]), "--src-name", "web",
                                      "--src-addr", "127.0.0.1:0", "--src-route", "relay"])
        _, port2 = src2.listening("source", "tcp")
        await wait_tunnel(port2, timeout=30)
        assert sha256(await exchange_through(port2, payload)) == sha256(payload)

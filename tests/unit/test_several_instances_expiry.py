"""Endpoint expiry with two control instances sharing the ``memory`` plugin's hub: the
destination's announcements stay published to the other instance while they linger on its
own, a quick reconnect to its instance is no news to a source on the other one, when the
lingering announcement expires the other instance's source is told, and a destination that
stops is withdrawn everywhere at once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from connet_core.client import Client
from connet_core.model import Role, RoutePolicy
from connet_core.plugins import load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import PeersUpdate
from connet_core.server import Server
from connet_core.testing import memory_transport_plugin
from support.services import echo_server
from test_engines import certs, client_settings, network, running, server_settings  # noqa: F401
from test_several_instances import SharedHub

EXPIRY = 5.0


async def until(predicate, timeout: float = 10.0) -> None:
    """Look again each loop turn (the engines' state has no event of its own)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_destination_back_on_its_instance_is_no_news_on_another_and_its_expiry_is(
        network, certs, tmp_path: Path) -> None:
    hooks = load_hooks(extra_plugins=[memory_transport_plugin(network), SharedHub()],
                       plugin_settings={"tokens": {"tokens": ("t-dst", "t-src")}})

    def with_expiry(name: str):
        settings = server_settings(certs, tmp_path / name)
        return dataclasses.replace(settings, control=dataclasses.replace(settings.control, endpoint_expiry=EXPIRY))

    one, two = Server(with_expiry("one"), hooks), Server(with_expiry("two"), hooks)
    async with echo_server() as echo_port, running(one, two):
        dst = Client(client_settings(certs, one.control.endpoint.local_address, "t-dst",
                                     dst=("web", echo_port, RoutePolicy.ANY)), hooks)
        src = Client(client_settings(certs, two.control.endpoint.local_address, "t-src", src=("web", RoutePolicy.ANY)),
                     hooks)
        async with running(src):
            async with running(dst):
                await until(lambda: len(two.control.matcher.view("web", Role.SOURCE).peers) == 1
                            and len(two.control.sessions) == 1)
                (source_session,) = two.control.sessions
                told: list[PeersUpdate] = []  # what instance two sends its source
                deliver = two.control._deliver

                def watch(pushes) -> None:
                    told.extend(update for session, update in pushes if session == source_session)
                    deliver(pushes)

                two.control._deliver = watch  # type: ignore[method-assign]

                # 1. the destination's session ends and it comes back to instance one at once
                (old,) = one.control.sessions.values()
                old.conn.close(CloseCode.OK, "test: the session ends")
                await until(lambda: one.control.matcher.lingering() == 1 or old.id not in one.control.sessions)
                await until(lambda: len(one.control.sessions) == 1 and old.id not in one.control.sessions
                            and one.control.matcher.lingering() == 0)  # its new session took over
                assert told == [], "the source on the other instance was told of the reconnect"
                assert len(two.control.matcher.view("web", Role.SOURCE).peers) == 1

                # 2. the destination's session is lost and it cannot come back (a cut path):
                # the source on the other instance is told once the expiry passed on instance one
                dst_addr, one_addr = dst.endpoint.local_address, one.control.endpoint.local_address
                network.partition(dst_addr, one_addr)
                (lost,) = one.control.sessions.values()
                lost.conn.close(CloseCode.OK, "test: the session is lost")
                await until(lambda: one.control.matcher.lingering() == 1)
                gone = asyncio.get_running_loop().time()
                assert told == []
                await until(lambda: bool(told) and told[-1].peers == (), timeout=EXPIRY + 5)
                assert asyncio.get_running_loop().time() - gone >= EXPIRY - 1.5
                assert two.control.status()["names"] == {"web": {"source": 1}}
                network.heal(dst_addr, one_addr)

                # 3. a destination that stops (says so) is withdrawn at once, on every instance
                await until(lambda: len(one.control.sessions) == 1 and told[-1].peers != ())
                before = len(told)
            await until(lambda: len(told) > before and told[-1].peers == (), timeout=EXPIRY - 1.5)
            assert one.control.matcher.lingering() == 0

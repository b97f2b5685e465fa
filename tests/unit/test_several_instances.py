"""Two control instances in one process sharing the ``memory`` plugin's hub (as instances
behind Redis share it): a destination on one and a source on the other are matched, and a
grant issued by one is accepted by the other's relay (the grant secret is shared). Plus the
configuration of several control addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connet_core import hookimpl
from connet_core.client import Client
from connet_core.config import load_config
from connet_core.errors import ConfigError
from connet_core.model import HostPort, RoutePolicy
from connet_core.plugins import load_hooks
from connet_core.server import Server
from connet_core.testing import memory_transport_plugin
from connet_memory import MemoryHub, MemoryState
from support.services import sha256
from test_engines import certs, client_settings, network, running, server_settings, through  # noqa: F401


class SharedHub:
    """An embedding program's plugin: every Control it builds joins one hub."""

    def __init__(self) -> None:
        self.hub = MemoryHub()

    @hookimpl
    def connet_shared_state(self, component: str) -> MemoryState:
        return MemoryState(self.hub)


@pytest.mark.parametrize("route", [RoutePolicy.ANY, RoutePolicy.RELAY])
async def test_a_destination_on_one_instance_meets_a_source_on_another(network, certs, tmp_path: Path,
                                                                         route) -> None:
    from support.services import echo_server

    shared = SharedHub()
    hooks = load_hooks(extra_plugins=[memory_transport_plugin(network), shared],
                       plugin_settings={"tokens": {"tokens": ("t-dst", "t-src")}})
    one = Server(server_settings(certs, tmp_path / "one"), hooks)
    two = Server(server_settings(certs, tmp_path / "two"), hooks)
    async with echo_server() as echo_port, running(one, two):
        addr_one, addr_two = one.control.endpoint.local_address, two.control.endpoint.local_address
        dst = Client(client_settings(certs, addr_one, "t-dst", dst=("web", echo_port, route)), hooks)
        src = Client(client_settings(certs, addr_two, "t-src", src=("web", route)), hooks)
        async with running(dst, src):
            payload = os.urandom(256 * 1024)
            assert sha256(await through(src.source_addresses["web"].port, payload)) == sha256(payload)
            assert one.control.status()["names"] == two.control.status()["names"] == {
                "web": {"destination": 1, "source": 1}}
            assert len(one.control.sessions) == len(two.control.sessions) == 1
            # each instance offers both built-in relays: its own and the other's
            assert sorted(r["instance"] is None for r in two.control.status()["relays"]) == [False, True]
            if route == RoutePolicy.RELAY:
                assert one.relay.counters.streams_total + two.relay.counters.streams_total >= 1
        assert one.control._grant_secret == two.control._grant_secret


def client_config(tmp_path: Path, text: str, env: dict[str, str] | None = None, flags: dict | None = None):
    path = tmp_path / "c.toml"
    path.write_text('[client]\ntoken = "t"\n' + text)
    return load_config("client", [path], flags or {}, env or {}, transport_names=["auto"]).client


def test_several_control_addresses_as_an_array_a_comma_list_a_flag_or_a_variable(tmp_path: Path) -> None:
    both = (HostPort("a.example", 1), HostPort("b.example", 2))
    assert client_config(tmp_path, 'server-addr = ["a.example:1", "b.example:2"]\n').server_addrs == both
    assert client_config(tmp_path, 'server-addr = "a.example:1, b.example:2"\n').server_addrs == both
    by_flag = client_config(tmp_path, "", flags={"client.server-addr": "a.example:1,b.example:2"})
    assert by_flag.server_addrs == both and by_flag.server_addr == both[0]
    by_env = client_config(tmp_path, "", env={"CONNET_CLIENT__SERVER_ADDR": "a.example:1,b.example:2"})
    assert by_env.server_addrs == both
    # the old single address still means what it meant
    one = client_config(tmp_path, 'server-addr = "a.example:1"\n')
    assert (one.server_addr, one.server_addrs, one.server_name, one.server_name_set) == (
        both[0], both[:1], "a.example", False)


@pytest.mark.parametrize("value, says", [('["a.example:1", "nope"]', "item 2: 'nope'"),
                                         ("[]", "empty array"), ('"a.example:1,"', "item 2")])
def test_a_bad_address_in_the_list_is_one_line(tmp_path: Path, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        client_config(tmp_path, f"server-addr = {value}\n")
    assert "client.server-addr" in str(info.value) and says in str(info.value) and "\n" not in str(info.value)


def test_tcp_addresses_serve_every_instance_or_pair_by_position(tmp_path: Path) -> None:
    from connet_core.control_addresses import ControlAddresses

    def partners(settings) -> list:
        addresses = ControlAddresses(settings.server_addrs, name="x", name_set=True, cafile=None,
                                     tcp_addrs=settings.server_tcp_addrs)
        return [addresses.tcp_addr(a) for a in settings.server_addrs]

    a, b, ta, tb = (HostPort("a.example", 1), HostPort("b.example", 2), HostPort("a.example", 443),
                    HostPort("b.example", 443))
    both = 'server-addr = ["a.example:1", "b.example:2"]\nudp = "never"\n'
    paired = client_config(tmp_path, both + 'server-tcp-addr = ["a.example:443", "b.example:443"]\n')
    assert partners(paired) == [ta, tb] and paired.server_tcp_addr == ta
    one_front = client_config(tmp_path, both, flags={"client.server-tcp-addr": "b.example:443"})
    assert partners(one_front) == [tb, tb]
    by_env = client_config(tmp_path, both, env={"CONNET_CLIENT__SERVER_TCP_ADDR": "a.example:443,b.example:443"})
    assert partners(by_env) == [ta, tb]
    assert partners(client_config(tmp_path, both.replace("never", "auto"))) == [None, None]


def test_tcp_addresses_of_another_count_are_one_line(tmp_path: Path) -> None:
    text = ('server-addr = ["a.example:1", "b.example:2", "c.example:3"]\n'
            'server-tcp-addr = ["a.example:443", "b.example:443"]\n')
    with pytest.raises(ConfigError) as info:
        client_config(tmp_path, text)
    message = str(info.value)
    assert "client.server-tcp-addr: 2 addresses for 3 server-addr addresses" in message and "\n" not in message

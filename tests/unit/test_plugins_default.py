"""The default plugins, called as connet calls them: through the plugins.Hooks facade."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
from pathlib import Path

import pytest

from connet_core import hookimpl, plugins
from connet_core.errors import PluginError, StoreError
from connet_core.model import HostPort, PathCandidate, PathKind, Principal, PrincipalKind, Role, RoutePolicy, Veto
from connet_core.store import Store
from connet_core.testing import MemoryNetwork, make_test_certificate, memory_transport_plugin
from connet_core.transport import Transport, Trust

CLIENT = PrincipalKind.CLIENT
RELAY = PrincipalKind.RELAY
ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
def hooks(network) -> plugins.Hooks:
    return plugins.load_hooks(extra_plugins=[memory_transport_plugin(network)])


def auth_hooks(network, tokens: dict | None = None, cidr: dict | None = None) -> plugins.Hooks:
    """The default plugins with their keys of the running command's section: connet server's
    (``tokens``, ``tokens-file``, ...) or connet control's (``client-tokens``, ``relay-tokens``...)."""
    return plugins.load_hooks(extra_plugins=[memory_transport_plugin(network)],
                              plugin_settings={"tokens": tokens or {}, "cidr": cidr or {}})


def server_tokens(*tokens: str, **rules) -> dict:
    return {"tokens": tokens, "tokens-file": None, **rules}


def write_tokens(path: Path, text: str, mtime: int) -> None:
    """Write a tokens file with an explicit mtime, so a rewrite is seen as a change even
    on file systems with coarse timestamps."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


# --- plugin loading -------------------------------------------------------------------------


def test_default_plugins_are_found_through_the_entry_point_group(hooks):
    for name in plugins.DEFAULT_PLUGINS:
        assert name in plugins.entry_point_names()
        assert hooks.pm.get_plugin(name) is not None, f"default plugin {name} was not loaded"


def test_every_default_hookimpl_is_trylast(hooks):
    # what makes an installed plugin win whatever order entry points load in
    seen = 0
    for name in plugins.DEFAULT_PLUGINS:
        plugin = hooks.pm.get_plugin(name)
        for caller in hooks.pm.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    assert impl.trylast, f"{name}: {caller.name} is not trylast"
                    seen += 1
    assert seen >= 6, "the default plugins implement at least the six non-transport hooks"


def test_unknown_name_in_disable_is_refused():
    with pytest.raises(PluginError) as err:
        plugins.load_hooks(disable=["tokenz"])
    assert "tokenz" in str(err.value)


def test_misspelled_hookimpl_is_refused_at_load():
    class Misspelled:
        @hookimpl
        def connet_authenticat(self, settings, kind, token):
            return None

    with pytest.raises(PluginError):
        plugins.load_hooks(extra_plugins=[Misspelled()])


def test_hookimpl_with_an_unknown_argument_is_refused_at_load():
    class WrongArgs:
        @hookimpl
        def connet_authenticate(self, kind, password):
            return None

    with pytest.raises(PluginError):
        plugins.load_hooks(extra_plugins=[WrongArgs()])


def test_disabling_tokens_leaves_nobody_authenticated():
    hooks = plugins.load_hooks(disable=["tokens"], plugin_settings={"tokens": server_tokens("secret")})
    assert hooks.pm.get_plugin("tokens") is None
    assert hooks.authenticate(CLIENT, "secret") is None


def test_disabling_filestore_makes_open_store_an_error(tmp_path):
    hooks = plugins.load_hooks(disable=["filestore"])
    with pytest.raises(PluginError):
        hooks.open_store("control", tmp_path)


def test_a_third_party_plugin_wins_over_the_trylast_default():
    class ThirdParty:
        @hookimpl
        def connet_authenticate(self, kind, token):
            return Principal(kind=kind, label="third-party") if token == "secret" else None

        @hookimpl
        def connet_select_routes(self, name, local_policy, remote_policy, candidates):
            return list(reversed(candidates))  # relay first, against the default's order

    hooks = plugins.load_hooks(extra_plugins=[ThirdParty()],
                               plugin_settings={"tokens": server_tokens("secret", "other")})
    # the default would say token#0: the third party is asked first and its answer wins
    assert hooks.authenticate(CLIENT, "secret") == Principal(CLIENT, "third-party")
    # its None defers to the default
    assert hooks.authenticate(CLIENT, "other") == Principal(CLIENT, "token#1")
    direct = PathCandidate(PathKind.DIRECT, "p", rtt=0.01)
    relay = PathCandidate(PathKind.RELAY, "p", relay="r:19191", rtt=0.001)
    assert hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, [direct, relay]) == [relay, direct]
    # the facade still drops what a policy forbids, whatever the plugin returned
    assert hooks.select_routes("web", RoutePolicy.DIRECT, RoutePolicy.ANY, [direct, relay]) == [direct]


# --- tokens -----------------------------------------------------------------------------------


def test_authenticate_inline_tokens(network):
    hooks = auth_hooks(network, {"client-tokens": ("alpha", "beta", "gamma"), "client-tokens-file": None,
                                 "relay-tokens": ("alpha",), "relay-tokens-file": None})  # connet control
    assert hooks.authenticate(CLIENT, "beta") == Principal(CLIENT, "token#1")
    assert hooks.authenticate(RELAY, "alpha") == Principal(RELAY, "token#0")
    assert hooks.authenticate(RELAY, "beta") is None  # a client token is no relay token
    assert hooks.authenticate(CLIENT, "bet") is None
    assert hooks.authenticate(CLIENT, "beta ") is None
    assert hooks.authenticate(CLIENT, "") is None
    assert hooks.authenticate(CLIENT, "bêta") is None
    assert auth_hooks(network, server_tokens()).authenticate(CLIENT, "alpha") is None
    # connet server: its built-in relay needs no token, and no other relay is authenticated
    assert auth_hooks(network, server_tokens("alpha")).authenticate(RELAY, "alpha") is None


def file_tokens(path: Path, **rules) -> dict:
    return {"tokens": None, "tokens-file": path, **rules}


def test_authenticate_from_a_tokens_file_that_changes(network, tmp_path, caplog):
    path = tmp_path / "tokens"
    write_tokens(path, "# clients\nfirst\n\n  second  \n", mtime=1_000)
    hooks = auth_hooks(network, file_tokens(path))
    assert hooks.authenticate(CLIENT, "second") == Principal(CLIENT, "token#1")
    assert hooks.authenticate(CLIENT, "# clients") is None

    write_tokens(path, "second\nthird\n", mtime=2_000)
    assert hooks.authenticate(CLIENT, "first") is None, "a removed token must stop working"
    assert hooks.authenticate(CLIENT, "second") == Principal(CLIENT, "token#0")
    assert hooks.authenticate(CLIENT, "third") == Principal(CLIENT, "token#1")
    assert not any(t in caplog.text for t in ("first", "second", "third")), "tokens must never be logged"


def test_a_vanished_tokens_file_keeps_the_last_good_set(network, tmp_path, caplog):
    path = tmp_path / "tokens"
    write_tokens(path, "kept\n", mtime=1_000)
    hooks = auth_hooks(network, file_tokens(path))
    assert hooks.authenticate(CLIENT, "kept") is not None
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="connet.tokens"):
        assert hooks.authenticate(CLIENT, "kept") == Principal(CLIENT, "token#0")
        assert hooks.authenticate(CLIENT, "kept") == Principal(CLIENT, "token#0")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "connet.tokens"]
    assert len(errors) == 1, "the failure is logged once, not on every call"
    assert str(path) in errors[0].getMessage()
    write_tokens(path, "new\n", mtime=3_000)
    assert hooks.authenticate(CLIENT, "new") == Principal(CLIENT, "token#0")
    assert hooks.authenticate(CLIENT, "kept") is None


def test_a_tokens_file_that_no_longer_fits_the_positional_rules_is_refused(network, tmp_path, caplog):
    path = tmp_path / "tokens"
    write_tokens(path, "one\ntwo\n", mtime=1_000)
    rules = [{}, {"role-matches": "source"}]
    hooks = auth_hooks(network, file_tokens(path, **{"token-restriction": rules}))
    second = Principal(CLIENT, "token#1", {"role-matches": "source"})
    assert hooks.authenticate(CLIENT, "two") == second
    write_tokens(path, "zero\none\ntwo\n", mtime=2_000)  # shifted: 'one' would get rule 1
    with caplog.at_level(logging.ERROR, logger="connet.tokens"):
        assert hooks.authenticate(CLIENT, "two") == second
        assert hooks.authenticate(CLIENT, "zero") is None
    assert any("3 tokens" in r.getMessage() and "2 per-token" in r.getMessage() for r in caplog.records)
    write_tokens(path, "uno\ndos\n", mtime=3_000)  # fits again: accepted
    assert hooks.authenticate(CLIENT, "dos") == second
    assert hooks.authenticate(CLIENT, "two") is None


# --- cidr -------------------------------------------------------------------------------------


def test_admit_address_applies_ip_restriction(network):
    restriction = {"allow-cidrs": (net("10.0.0.0/8"), net("2001:db8::/32")), "deny-cidrs": (net("10.6.0.0/16"),)}
    hooks = auth_hooks(network, {"client-tokens": ("t",)},  # connet control: clients restricted, relays not here
                       {"client-ip-restriction": restriction, "relay-ip-restriction": {"allow-cidrs": (net("10.0.0.0/8"),)}})
    assert hooks.admit_address(CLIENT, ip("10.1.2.3")) is None
    assert hooks.admit_address(CLIENT, ip("2001:db8::5")) is None
    assert hooks.admit_address(CLIENT, ip("::ffff:10.1.2.3")) is None
    denied = hooks.admit_address(CLIENT, ip("10.6.0.1"))
    assert denied is not None and "10.6.0.0/16" in denied
    assert hooks.admit_address(RELAY, ip("192.0.2.1")) is not None
    assert hooks.admit_address(CLIENT, ip("::ffff:10.6.9.9")) is not None
    assert auth_hooks(network, server_tokens("t"), {"ip-restriction": None}).admit_address(CLIENT, ip("192.0.2.1")) is None


def test_authorize_applies_per_token_rules(network):
    rules = [{"allow-cidrs": (net("192.0.2.0/24"),)}, {"name-matches": r"web-\d+", "role-matches": "destination"}]
    hooks = auth_hooks(network, server_tokens("a", "b", **{"token-restriction": rules}))
    first, second = hooks.authenticate(CLIENT, "a"), hooks.authenticate(CLIENT, "b")
    assert first.label == "token#0" and second.label == "token#1"
    assert hooks.authorize(first, ip("192.0.2.9")) is None
    refused = hooks.authorize(first, ip("198.51.100.1"))
    assert refused is not None and "token#0" in refused
    assert hooks.authorize(second, ip("198.51.100.1")) is None
    assert hooks.authorize(second, ip("198.51.100.1"), "web-12", Role.DESTINATION) is None
    assert hooks.authorize(second, ip("198.51.100.1"), "web-12x", Role.DESTINATION) is not None, "whole name"
    assert hooks.authorize(second, ip("198.51.100.1"), "xweb-12", Role.DESTINATION) is not None
    assert hooks.authorize(second, ip("198.51.100.1"), "web-12", Role.SOURCE) is not None
    assert hooks.authorize(first, ip("192.0.2.9"), "anything", Role.SOURCE) is None
    # a token configured without rules is not restricted
    plain = auth_hooks(network, server_tokens("a")).authenticate(CLIENT, "a")
    assert hooks.authorize(plain, ip("198.51.100.1"), "any", Role.SOURCE) is None
    # rules are positional: a token past the rules (a list that slipped past the checks) is vetoed
    past = auth_hooks(network, server_tokens("a", "b", "c", **{"token-restriction": rules}))
    assert isinstance(past.authenticate(CLIENT, "c"), Veto)


# --- routes -----------------------------------------------------------------------------------


def test_select_routes_puts_direct_first_then_orders_by_rtt(hooks):
    slow_direct = PathCandidate(PathKind.DIRECT, "p", rtt=0.2)
    fast_direct = PathCandidate(PathKind.DIRECT, "p", rtt=0.01)
    new_direct = PathCandidate(PathKind.DIRECT, "p", rtt=None)
    fast_relay = PathCandidate(PathKind.RELAY, "p", relay="r1:19191", rtt=0.001)
    slow_relay = PathCandidate(PathKind.RELAY, "p", relay="r2:19191", rtt=0.05)
    given = [slow_relay, new_direct, fast_relay, slow_direct, fast_direct]
    assert hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, given) == [
        fast_direct, slow_direct, new_direct, fast_relay, slow_relay
    ]
    assert hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.RELAY, given) == [fast_relay, slow_relay]
    assert hooks.select_routes("web", RoutePolicy.DIRECT, RoutePolicy.RELAY, given) == []


# --- filestore --------------------------------------------------------------------------------


async def test_open_store_round_trips_values(hooks, tmp_path):
    store_dir = tmp_path / "state"
    store = hooks.open_store("control", store_dir)
    assert isinstance(store, Store)
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert await store.get("secrets", "reset-key") is None
    assert await store.keys("secrets") == []
    await store.put("secrets", "reset-key", b"\x00key")
    await store.put("secrets", "relay.cert", b"pem")
    await store.put("secrets", "reset-key", b"\x01new")
    assert await store.get("secrets", "reset-key") == b"\x01new"
    assert await store.keys("secrets") == ["relay.cert", "reset-key"]
    path = store_dir / "control" / "secrets" / "reset-key"
    assert path.read_bytes() == b"\x01new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["relay.cert", "reset-key"], "no temp file left"
    await store.delete("secrets", "reset-key")
    await store.delete("secrets", "never-there")
    assert await store.get("secrets", "reset-key") is None
    # a second open sees the same data: this is what survives a restart
    again = hooks.open_store("control", store_dir)
    assert await again.get("secrets", "relay.cert") == b"pem"
    assert await hooks.open_store("relay", store_dir).get("secrets", "relay.cert") is None


async def test_store_refuses_bad_names(hooks, tmp_path):
    store = hooks.open_store("relay", tmp_path)
    for namespace, key in [("..", "k"), ("ns", ".."), ("ns", "a/b"), ("ns", ".hidden"), ("n s", "k"), ("ns", "")]:
        with pytest.raises(StoreError):
            await store.put(namespace, key, b"v")
    with pytest.raises(StoreError):
        hooks.open_store("../escape", tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "relay"]


def test_open_store_on_a_file_is_a_store_error_naming_it(hooks, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StoreError) as err:
        hooks.open_store("control", not_a_dir)
    assert str(not_a_dir) in str(err.value)
    with pytest.raises(StoreError) as err:
        hooks.open_store("control", not_a_dir / "below")
    assert str(not_a_dir / "below") in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_open_store_without_permission_is_a_store_error_naming_it(hooks, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreError) as err:
            hooks.open_store("control", locked)
        assert str(locked) in str(err.value)
    finally:
        locked.chmod(0o700)


# --- transport --------------------------------------------------------------------------------


def test_transport_names_and_transport_from_the_memory_plugin(hooks, network):
    names = hooks.transport_names()
    assert "memory" in names
    assert len(names) == len(set(names)), "transport names must be unique across plugins"
    transport = hooks.transport("memory")
    assert isinstance(transport, Transport)
    assert transport.name == "memory"
    with pytest.raises(PluginError) as err:
        hooks.transport("no-such-transport")
    assert "memory" in str(err.value), "the error lists the known transports"


def test_transport_from_the_quic_plugin_when_it_provides_one(hooks):
    names = plugins.load_hooks().transport_names()
    if "aioquic" not in names:
        pytest.skip("the quic plugin provides no 'aioquic' transport yet")
    transport = hooks.transport("aioquic")
    assert isinstance(transport, Transport) and transport.name == "aioquic"


def test_auto_is_qh3_when_it_imports_and_aioquic_otherwise(monkeypatch):
    import connet_quic

    hooks = plugins.load_hooks()
    assert "auto" in hooks.transport_names()
    assert hooks.transport("auto").name == "qh3", "qh3 is a dependency: auto picks it"
    # where qh3 does not import (no wheel for the platform, a broken build), auto is aioquic
    monkeypatch.setattr(connet_quic, "_qh3_importable", lambda: False)
    assert hooks.transport("auto").name == "aioquic"
    assert "qh3" not in hooks.transport_names(), "qh3 is not offered when it does not import"
    with pytest.raises(PluginError):
        hooks.transport("qh3")


async def test_the_memory_transport_from_the_facade_connects(hooks):
    alpn = "connet-test/1"
    identity, der, _, _ = make_test_certificate("server.test")
    transport = hooks.transport("memory")
    server = await transport.bind(HostPort("", 0), identity=identity, alpns=[alpn])
    client = await transport.bind(HostPort("", 0), identity=None, alpns=[])
    conn = await client.dial(server.local_address, alpn=alpn, trust=Trust(server_name="server.test", pinned_der=der))
    assert conn.peer_certificate == der
    await client.close()
    await server.close()

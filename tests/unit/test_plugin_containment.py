"""Containment: whatever a plugin raises or returns becomes a PluginError naming the plugin
and the hook, counted, and nothing else (the engines' side: tests/e2e/test_misbehaving_plugins.py)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from connet_core import hookimpl, plugins
from connet_core.errors import PluginError
from connet_core.model import PathCandidate, PathKind, Principal, PrincipalKind, RoutePolicy

CLIENT = PrincipalKind.CLIENT
AUTH = {"tokens": {"tokens": ("good", "bad")}}  # the tokens plugin's [server] tokens
ADDRESS = ipaddress.ip_address("127.0.0.1")


class Raising:
    """Raises for the token "bad" only, like the plugin in the issue."""

    @hookimpl
    def connet_authenticate(self, kind, token):
        if token == "bad":
            raise ValueError("boom")
        return None


class WrongTypes:
    @hookimpl
    def connet_authenticate(self, kind, token):
        return "yes"  # a str is not a Principal

    @hookimpl
    def connet_authorize(self, principal, address, name, role):
        return 1  # not a reason string

    @hookimpl
    def connet_admit_address(self, kind, address):
        return True


class AsyncByMistake:
    @hookimpl
    async def connet_authenticate(self, kind, token):
        return None


def test_a_raising_plugin_fails_that_call_only_and_is_named():
    hooks = plugins.load_hooks(extra_plugins=[Raising()], plugin_settings=AUTH)
    # another token: the plugin defers, the tokens plugin answers
    assert hooks.authenticate(CLIENT, "good") == Principal(CLIENT, "token#0")
    with pytest.raises(PluginError) as caught:
        hooks.authenticate(CLIENT, "bad")
    assert caught.value.plugin == "Raising" and caught.value.hook == "connet_authenticate"
    assert "ValueError: boom" in str(caught.value) and "\n" not in str(caught.value)
    assert hooks.error_report() == [{"plugin": "Raising", "hook": "connet_authenticate", "count": 1}]
    # and it keeps working for everyone else
    assert hooks.authenticate(CLIENT, "good") == Principal(CLIENT, "token#0")


@pytest.mark.parametrize("call, hook", [
    (lambda h: h.authenticate(CLIENT, "good"), "connet_authenticate"),
    (lambda h: h.authorize(Principal(CLIENT), ADDRESS), "connet_authorize"),
    (lambda h: h.admit_address(CLIENT, ADDRESS), "connet_admit_address"),
])
def test_a_result_of_the_wrong_type_is_the_plugins_error(call, hook):
    hooks = plugins.load_hooks(extra_plugins=[WrongTypes()], plugin_settings=AUTH)
    with pytest.raises(PluginError) as caught:
        call(hooks)
    assert (caught.value.plugin, caught.value.hook) == ("WrongTypes", hook)
    assert hooks.errors[("WrongTypes", hook)] == 1


def test_an_async_decision_hook_is_refused_not_taken_for_an_answer():
    # a coroutine is "not None": pluggy's firstresult would have let it win unrun
    hooks = plugins.load_hooks(extra_plugins=[AsyncByMistake()], plugin_settings=AUTH)
    with pytest.raises(PluginError, match="coroutine"):
        hooks.authenticate(CLIENT, "good")


def test_a_cancellation_is_not_contained():
    class Cancelling:
        @hookimpl
        def connet_authenticate(self, kind, token):
            raise asyncio.CancelledError()

    hooks = plugins.load_hooks(extra_plugins=[Cancelling()], plugin_settings=AUTH)
    with pytest.raises(asyncio.CancelledError):
        hooks.authenticate(CLIENT, "good")
    assert not hooks.errors


# --- route selection ----------------------------------------------------------------------


def candidates() -> list[PathCandidate]:
    return [PathCandidate(PathKind.DIRECT, "peer", None, 0.01, key="direct-handle"),
            PathCandidate(PathKind.RELAY, "peer", "127.0.0.1:19191", 0.02, key="relay-handle")]


class Rebuilding:
    """Returns equal but new PathCandidate objects (relay first): their ``key`` is lost."""

    @hookimpl
    def connet_select_routes(self, name, local_policy, remote_policy, candidates):
        return [PathCandidate(c.kind, c.peer, c.relay, c.rtt) for c in reversed(candidates)]


def test_equal_copies_of_candidates_stand_for_the_offered_ones():
    hooks = plugins.load_hooks(extra_plugins=[Rebuilding()], plugin_settings=AUTH)
    offered = candidates()
    ordered = hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, offered)
    # the very objects offered, in the plugin's order: the engine's handles are intact
    assert [id(p) for p in ordered] == [id(offered[1]), id(offered[0])]
    assert [p.key for p in ordered] == ["relay-handle", "direct-handle"]


def test_a_path_that_was_not_offered_is_refused():
    class Inventing:
        @hookimpl
        def connet_select_routes(self, name, local_policy, remote_policy, candidates):
            return [PathCandidate(PathKind.RELAY, "elsewhere", "192.0.2.1:1")]

    hooks = plugins.load_hooks(extra_plugins=[Inventing()], plugin_settings=AUTH)
    with pytest.raises(PluginError, match="not a candidate") as caught:
        hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, candidates())
    assert caught.value.hook == "connet_select_routes"


def test_a_route_result_of_the_wrong_type_is_refused():
    class Garbage:
        @hookimpl
        def connet_select_routes(self, name, local_policy, remote_policy, candidates):
            return [("direct", "peer")]

    hooks = plugins.load_hooks(extra_plugins=[Garbage()], plugin_settings=AUTH)
    with pytest.raises(PluginError, match="expected a list of PathCandidate"):
        hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, candidates())


def test_a_duplicated_path_is_tried_once():
    class Twice:
        @hookimpl
        def connet_select_routes(self, name, local_policy, remote_policy, candidates):
            return [candidates[0], candidates[0]]

    hooks = plugins.load_hooks(extra_plugins=[Twice()], plugin_settings=AUTH)
    offered = candidates()
    assert hooks.select_routes("web", RoutePolicy.ANY, RoutePolicy.ANY, offered) == [offered[0]]


def test_a_decision_hook_wrapper_is_refused_at_load():
    class Wrapper:
        @hookimpl(wrapper=True)
        def connet_authenticate(self, kind, token):
            return (yield)

    with pytest.raises(PluginError, match="may not be a hook wrapper"):
        plugins.load_hooks(extra_plugins=[Wrapper()], plugin_settings=AUTH)


def test_an_entry_point_plugin_is_named_by_its_entry_point():
    hooks = plugins.load_hooks(plugin_settings=AUTH)
    tokens = hooks.pm.get_plugin("tokens")
    assert plugins.plugin_label(hooks.pm, tokens) == "tokens"

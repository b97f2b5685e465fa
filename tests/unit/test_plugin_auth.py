"""Authentication hooks free of the default plugins' model: the veto rule, a principal's
own claims enforced by the cidr plugin, and a token list required only with the tokens plugin."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from connet_core import hookimpl, plugins
from connet_core.config import load_config
from connet_core.errors import ConfigError
from connet_core.model import Principal, PrincipalKind, Role, Veto

CLIENT = PrincipalKind.CLIENT
AUTH = {"tokens": {"tokens": ("ok-1", "other-2")}}  # the tokens plugin's [server] tokens
HERE = ipaddress.ip_address("127.0.0.1")


class OkOnly:
    """"Only tokens starting with ok-": a veto, no hook wrapper."""

    @hookimpl
    def connet_authenticate(self, token):
        return None if token.startswith("ok-") else Veto("token does not start with ok-")


def test_a_veto_refuses_a_token_another_plugin_accepts():
    hooks = plugins.load_hooks(extra_plugins=[OkOnly()], plugin_settings=AUTH)
    # the tokens plugin knows both tokens; the veto wins over its Principal
    assert hooks.authenticate(CLIENT, "other-2") == Veto("token does not start with ok-", "OkOnly")
    # no veto: the tokens plugin's answer stands
    assert hooks.authenticate(CLIENT, "ok-1") == Principal(CLIENT, "token#0")
    # unknown to everyone and vetoed: still a veto (the log says why)
    assert isinstance(hooks.authenticate(CLIENT, "nobody"), Veto)
    assert hooks.authenticate(CLIENT, "ok-unknown") is None


def test_without_a_veto_the_first_principal_wins():
    class Mine:
        @hookimpl
        def connet_authenticate(self, kind, token):
            return Principal(kind, label="mine") if token == "ok-1" else None

    hooks = plugins.load_hooks(extra_plugins=[Mine()], plugin_settings=AUTH)
    assert hooks.authenticate(CLIENT, "ok-1") == Principal(CLIENT, "mine")


def claimed(**claims) -> Principal:
    return Principal(CLIENT, label="signed:alice", claims=claims)


def test_the_cidr_plugin_enforces_a_principals_claims():
    hooks = plugins.load_hooks(plugin_settings=AUTH)
    alice = claimed(**{"name-matches": "web-.*", "role-matches": "destination", "allow-cidrs": ["127.0.0.0/8"]})
    assert hooks.authorize(alice, HERE) is None
    assert hooks.authorize(alice, HERE, "web-1", Role.DESTINATION) is None
    assert "does not match name-matches" in hooks.authorize(alice, HERE, "db", Role.DESTINATION)
    assert "is not role-matches" in hooks.authorize(alice, HERE, "web-1", Role.SOURCE)
    assert "matches no allow-cidrs" in hooks.authorize(alice, ipaddress.ip_address("192.0.2.1"))
    # "any" claims no role; unreadable claims refuse rather than allow
    assert hooks.authorize(claimed(**{"role-matches": "any"}), HERE, "x", Role.SOURCE) is None
    assert "unreadable claims" in hooks.authorize(claimed(**{"allow-cidrs": ["nonsense"]}), HERE)


SERVER = """
[server]
cert-file = "c.pem"
key-file = "k.pem"
"""


def test_no_token_list_is_needed_without_the_tokens_plugin(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text(SERVER)
    with pytest.raises(ConfigError, match="tokens or tokens-file is required"):
        load_config("server", [path], environ={})
    path.write_text('disable-plugins = ["tokens"]\n' + SERVER + 'ip-restriction.allow-cidrs = ["127.0.0.0/8"]\n')
    config = load_config("server", [path], environ={})
    values = config.common.plugins  # the tokens plugin's keys unset, the cidr plugin's given
    assert values["tokens"]["tokens"] is None and values["tokens"]["tokens-file"] is None
    assert values["cidr"]["ip-restriction"]["allow-cidrs"] == (ipaddress.ip_network("127.0.0.0/8"),)


def test_per_token_rules_still_need_the_token_list(tmp_path: Path):
    path = tmp_path / "s.toml"
    path.write_text('disable-plugins = ["tokens"]\n' + SERVER + '[[server.token-restriction]]\nname-matches = "x"\n')
    with pytest.raises(ConfigError, match=r"server\.token-restriction: needs tokens or tokens-file"):
        load_config("server", [path], environ={})

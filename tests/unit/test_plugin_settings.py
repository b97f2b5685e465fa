"""Plugin settings: keys a plugin declares, set in [plugins.NAME] or CONNET_PLUGINS__NAME__KEY,
validated like connet's own keys and handed to that plugin's hooks."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connet_core import hookimpl, plugins
from connet_core.config import load_config
from connet_core.errors import ConfigError, PluginError
from connet_core.model import Principal, PrincipalKind
from connet_core.plugin_settings import PluginKey, PluginSettings
from support.plugin_dist import plugin_on_path

DECLARED = {
    "okauth": (
        PluginKey("prefix", "string", "ok-", "tokens must start with this"),
        PluginKey("max-sessions", "integer", 3, "sessions per token"),
        PluginKey("strict", "boolean", False, "refuse more"),
        PluginKey("names", "strings", None, "names it knows"),
        PluginKey("database", "path", None, "where the names are"),
    ),
    "signed-tokens": (PluginKey("public-key", "path", None, "the Ed25519 public key"),),
}
CLIENT = "[client]\ntoken = \"t\"\n"


@pytest.fixture(autouse=True)
def no_connet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CONNET_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "c.toml"
    path.write_text(CLIENT + text)
    return load_config("client", [path], environ=environ or {}, plugin_keys=DECLARED)


def test_values_from_a_file_are_converted_and_paths_resolved(tmp_path):
    config = load(tmp_path, '[plugins.okauth]\nprefix = "x-"\nmax-sessions = 5\nstrict = true\n'
                            'names = ["a", "b"]\ndatabase = "names.db"\n')
    assert config.common.plugins == {"okauth": {"prefix": "x-", "max-sessions": 5, "strict": True,
                                                "names": ("a", "b"), "database": tmp_path / "names.db"}}


def test_environment_variables_set_plugin_keys_by_their_type(tmp_path):
    env = {"CONNET_PLUGINS__OKAUTH__MAX_SESSIONS": "7", "CONNET_PLUGINS__OKAUTH__STRICT": "true",
           "CONNET_PLUGINS__OKAUTH__NAMES": '["web"]', "CONNET_PLUGINS__OKAUTH__PREFIX": "1234",
           "CONNET_PLUGINS__SIGNED_TOKENS__PUBLIC_KEY": "/keys/pub.pem"}
    config = load(tmp_path, '[plugins.okauth]\nmax-sessions = 5\n', env)
    assert config.common.plugins["okauth"] == {"max-sessions": 7, "strict": True, "names": ("web",),
                                               "prefix": "1234"}  # a string key stays a string
    assert config.common.plugins["signed-tokens"] == {"public-key": Path("/keys/pub.pem")}


@pytest.mark.parametrize("text, env, message", [
    ('[plugins.okauth]\nprefx = "x"\n', {}, r"c\.toml: plugins\.okauth\.prefx: unknown key \(did you mean prefix\?\)$"),
    ('[plugins.okauth]\nmax-sessions = "5"\n', {}, r"c\.toml: plugins\.okauth\.max-sessions: expected an integer, got a string$"),
    ('[plugins.okauth]\nstrict = 1\n', {}, r"plugins\.okauth\.strict: expected true or false, got an integer$"),
    ('[plugins.okauth]\nnames = ["a", 2]\n', {}, r"plugins\.okauth\.names: item 2: expected a non-empty string"),
    ('[plugins.nosuch]\nkey = 1\n', {}, r"plugins\.nosuch: unknown key \(no installed plugin named 'nosuch' takes settings"),
    ('[plugins]\nokauth = 1\n', {}, r"plugins\.okauth: expected a table"),
    ("", {"CONNET_PLUGINS__OKAUTH__PREFX": "x"}, r"^CONNET_PLUGINS__OKAUTH__PREFX: plugins\.okauth\.prefx: unknown key"),
    ("", {"CONNET_PLUGINS__OKAUTH__MAX_SESSIONS": "many"}, r"^CONNET_PLUGINS__OKAUTH__MAX_SESSIONS: plugins\.okauth\.max-sessions: expected a TOML value"),
    ("", {"CONNET_PLUGINS__OKAUTH__MAX_SESSIONS": "2.5"}, r"^CONNET_PLUGINS__OKAUTH__MAX_SESSIONS: plugins\.okauth\.max-sessions: expected an integer, got a number$"),
])
def test_a_bad_plugin_key_is_one_line_naming_it(tmp_path, text, env, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, text, env)
    assert "\n" not in str(caught.value)


class OkAuth:
    """Accepts tokens that start with its ``prefix`` setting."""

    @hookimpl
    def connet_plugin_keys(self):
        return [PluginKey("prefix", "string", "ok-", "tokens must start with this")]

    @hookimpl
    def connet_authenticate(self, kind, token, plugin_settings):
        prefix = plugin_settings["prefix"]
        return Principal(kind, f"okauth:{prefix}") if token.startswith(prefix) else None


class Other:
    @hookimpl
    def connet_plugin_keys(self):
        return [PluginKey("prefix", "string", "other-")]

    @hookimpl
    def connet_admit_address(self, plugin_settings):
        seen.append(dict(plugin_settings))


seen: list[dict] = []


def test_each_plugins_hooks_get_its_own_settings_with_defaults():
    hooks = plugins.load_hooks(extra_plugins=[OkAuth(), Other()], plugin_settings={"OkAuth": {"prefix": "yes-"}})
    assert hooks.authenticate(PrincipalKind.CLIENT, "yes-1") == Principal(PrincipalKind.CLIENT, "okauth:yes-")
    assert hooks.authenticate(PrincipalKind.CLIENT, "ok-1") is None  # not the default any more
    seen.clear()
    assert hooks.admit_address(PrincipalKind.CLIENT, ipaddress.ip_address("127.0.0.1")) is None
    assert seen == [{"prefix": "other-"}]  # the default, and not OkAuth's value
    assert isinstance(hooks.settings["Other"], PluginSettings)
    assert hooks.declared["OkAuth"][0].doc == "tokens must start with this"


@pytest.mark.parametrize("keys, problem", [
    ([PluginKey("Prefix", "string")], "lower-case"),
    ([PluginKey("n", "float")], "kind 'float' is not one of"),
    ([PluginKey("n", "integer", "3")], "default '3': expected an integer"),
    ([PluginKey("n", "string"), PluginKey("n", "integer")], "declared twice"),
    (["n"], "expected a list of PluginKey"),
])
def test_a_bad_declaration_stops_loading_naming_the_plugin(keys, problem):
    class Bad:
        @hookimpl
        def connet_plugin_keys(self):
            return keys

    with pytest.raises(PluginError, match=problem) as caught:
        plugins.load_hooks(extra_plugins=[Bad()])
    assert (caught.value.plugin, caught.value.hook) == ("Bad", "connet_plugin_keys")


PLUGIN = """
    from connet_core import hookimpl
    from connet_core.plugin_settings import PluginKey

    @hookimpl
    def connet_plugin_keys():
        return [PluginKey("prefix", "string", "ok-", "tokens must start with this")]
"""


@pytest.mark.parametrize("text, env, message", [
    ('[plugins.ok-auth]\nprefx = "x"\n', {}, "plugins.ok-auth.prefx: unknown key (did you mean prefix?)"),
    ('[plugins.ok-auth]\nprefix = 1\n', {}, "plugins.ok-auth.prefix: expected a non-empty string, got an integer"),
    ("", {"CONNET_PLUGINS__OK_AUTH__PREFIXX": "x"}, "plugins.ok-auth.prefixx: unknown key"),
])
def test_connet_check_refuses_a_bad_plugin_key_with_one_line_and_exit_2(tmp_path, text, env, message):
    """A real installed plugin (found by its entry point) and the real command line."""
    env = {**plugin_on_path(tmp_path / "site", "ok-auth", "ok_auth_plugin", PLUGIN), **env}
    config = tmp_path / "client.toml"
    config.write_text(CLIENT + text)
    result = subprocess.run([sys.executable, "-m", "connet_core.cli", "check", "--config", str(config)],
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_connet_check_accepts_the_plugins_keys(tmp_path):
    env = plugin_on_path(tmp_path / "site", "ok-auth", "ok_auth_plugin", PLUGIN)
    config = tmp_path / "client.toml"
    config.write_text(CLIENT + '[plugins.ok-auth]\nprefix = "x-"\n')
    result = subprocess.run([sys.executable, "-m", "connet_core.cli", "check", "--config", str(config)],
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_default_plugins_keys_are_all_in_core_sections():
    """The tokens and cidr plugins' keys are where connet's users always set them ([server]
    tokens...), so no default plugin has a [plugins.NAME] table."""
    hooks = plugins.load_hooks()
    declared = hooks.plugin_keys()
    assert all(key.section is not None for name in plugins.DEFAULT_PLUGINS for key in declared.get(name, ()))
    assert {k.key for k in declared["tokens"]} >= {"tokens", "tokens-file", "client-tokens", "relay-tokens"}
    assert {k.key for k in declared["cidr"]} == {"ip-restriction", "client-ip-restriction", "relay-ip-restriction"}
    assert plugins.load_hooks(extra_plugins=[OkAuth()]).plugin_keys()["OkAuth"] == tuple(OkAuth().connet_plugin_keys())

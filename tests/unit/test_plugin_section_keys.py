"""Plugin keys in a core section (``PluginKey(section="server")``): set as ``[server] KEY``,
``CONNET_SERVER__KEY`` or ``connet server --KEY``, validated and reported exactly like connet's
own keys of that section, and handed to the declaring plugin's hooks only when the running
command reads that section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connet_core import hookimpl, plugins
from connet_core.certs import write_test_certificates
from connet_core.config import load_config
from connet_core.errors import ConfigError, PluginError
from connet_core.plugin_settings import PluginKey, SettingProblem
from support.plugin_dist import plugin_on_path

KEYS = (
    PluginKey("greeting", "string", doc="what to say", section="server"),
    PluginKey("realm", "string", doc="a realm", section="server", choices=("home", "work")),
    PluginKey("users", "strings", doc="who may come", section="server", alternative="users-file"),
    PluginKey("users-file", "path", doc="a file of users", section="server", alternative="users"),
    PluginKey("nets", "cidrs", doc="from where", section="server"),
    PluginKey("limit", "table", doc="limits", section="server", fields=(("allow-cidrs", "cidrs"),)),
    PluginKey("rule", "tables", doc="rules", section="server", fields=(("name-matches", "regex"),)),
    PluginKey("client-users", "strings", doc="who may come", section="control"),
    PluginKey("motto", "string", "hi", "its own table"),
)
DECLARED = {**plugins.load_hooks().declared, "welcome": KEYS}  # with the default plugins' ([server] tokens)


@pytest.fixture(autouse=True)
def no_connet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CONNET_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_certificates(tmp_path_factory.mktemp("certs"), ["localhost"])


def server_toml(certs: dict[str, Path], extra: str = "") -> str:
    return (f'[server]\ncert-file = "{certs["cert"]}"\nkey-file = "{certs["key"]}"\ntokens = ["t"]\n' + extra)


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None, flags: dict | None = None,
         command: str = "server"):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(command, [path], flags, environ=environ or {}, plugin_keys=DECLARED)


def test_section_keys_are_converted_like_connets_own_and_reach_the_plugin(tmp_path, certs):
    config = load(tmp_path, server_toml(certs, 'greeting = "hello"\nrealm = "home"\nusers-file = "u.txt"\n'
                                               'nets = ["10.0.0.1/8"]\n[server.limit]\nallow-cidrs = ["::1/128"]\n'
                                               '[[server.rule]]\nname-matches = "web-.*"\n'))
    values = config.common.plugins["welcome"]
    assert values["greeting"] == "hello" and values["realm"] == "home"
    assert values["users"] is None and values["users-file"] == tmp_path / "u.txt"
    assert [str(n) for n in values["nets"]] == ["10.0.0.0/8"]  # masked like connet's own cidrs
    assert [str(n) for n in values["limit"]["allow-cidrs"]] == ["::1/128"]
    assert values["rule"] == [{"name-matches": "web-.*"}]
    assert "client-users" not in values  # a [control] key: not what connet server reads

    class Welcome:
        @hookimpl
        def connet_plugin_keys(self):
            return list(KEYS)

    hooks = plugins.load_hooks(extra_plugins=[Welcome()], plugin_settings={"Welcome": values})
    given = dict(hooks.settings["Welcome"])
    assert given["motto"] == "hi" and given["greeting"] == "hello"  # its table's default, its section's value
    assert "client-users" not in given


def test_a_control_command_gets_its_own_sections_keys(tmp_path, certs):
    text = (f'[control]\ncert-file = "{certs["cert"]}"\nkey-file = "{certs["key"]}"\nclient-tokens = ["t"]\n'
            'client-users = ["ann"]\n')
    values = load(tmp_path, text, command="control").common.plugins["welcome"]
    assert values == {"client-users": ("ann",)}


def test_environment_and_flags_set_section_keys_and_flags_win(tmp_path, certs):
    env = {"CONNET_SERVER__GREETING": "from env", "CONNET_SERVER__USERS": '["ann", "bob"]'}
    values = load(tmp_path, server_toml(certs, 'greeting = "file"\n'), env).common.plugins["welcome"]
    assert values["greeting"] == "from env" and values["users"] == ("ann", "bob")
    values = load(tmp_path, server_toml(certs), env, {"server.greeting": "flag"}).common.plugins["welcome"]
    assert values["greeting"] == "flag"


@pytest.mark.parametrize("extra, env, message", [
    ("greting = 1\n", {}, r"c\.toml: server\.greting: unknown key \(did you mean greeting\?\)$"),
    ("greeting = 1\n", {}, r"c\.toml: server\.greeting: expected a string, got an integer$"),
    ('realm = "moon"\n', {}, r"server\.realm: 'moon' is not one of home, work$"),
    ('nets = ["nowhere"]\n', {}, r"server\.nets: 'nowhere' is not a CIDR"),
    ("[server.limit]\nallow = []\n", {}, r"server\.limit\.allow: unknown key"),
    ('[[server.rule]]\nname-matches = "("\n', {}, r"server\.rule\[1\]\.name-matches: '\(' is not a valid regular"),
    ('users = ["a"]\nusers-file = "f"\n', {}, r"server\.users-file: give users or users-file, not both"),
    ("", {"CONNET_SERVER__GRETING": "x"}, r"^CONNET_SERVER__GRETING: server\.greting: unknown key"),
])
def test_a_bad_section_key_is_one_line_naming_it(tmp_path, certs, extra, env, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, server_toml(certs, extra), env)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("key, problem", [
    (PluginKey("n", "integer", section="server"), "kind 'integer' is not one of"),
    (PluginKey("n", "string", "x", section="server"), "has no default"),
    (PluginKey("n", "string", section="client"), "section must be one of server, control, relay"),
    (PluginKey("n", "table", section="server"), "fields are given for, and only for"),
    (PluginKey("n", "table", section="server", fields=(("f", "table"),)), "field 'f' of kind 'table'"),
    (PluginKey("n", "string", choices=("a",)), "are for keys in a core section"),
])
def test_a_bad_section_declaration_stops_loading_naming_the_plugin(key, problem):
    class Bad:
        @hookimpl
        def connet_plugin_keys(self):
            return [key]

    with pytest.raises(PluginError, match=problem):
        plugins.load_hooks(extra_plugins=[Bad()])


def test_a_section_key_connet_or_another_plugin_has_is_refused(tmp_path, certs):
    with pytest.raises(PluginError, match=r"plugin 'welcome': key 'addr' in \[server\] is connet's already"):
        load_config("server", [], {}, environ={}, plugin_keys={"welcome": (PluginKey("addr", "string",
                                                                                      section="server"),)})
    with pytest.raises(PluginError, match=r"plugin 'welcome': key 'tokens' in \[server\] is plugin 'tokens''s"):
        load_config("server", [], {}, environ={}, plugin_keys={**DECLARED, "welcome": (PluginKey("tokens", "strings",
                                                                                                   section="server"),)})
    twice = {"a": (PluginKey("x", "string", section="server"),), "b": (PluginKey("x", "string", section="server"),)}
    with pytest.raises(PluginError, match=r"plugin 'b': key 'x' in \[server\] is plugin 'a''s already"):
        load_config("server", [], {}, environ={}, plugin_keys=twice)


PLUGIN = """
    from connet_core import hookimpl
    from connet_core.plugin_settings import PluginKey, SettingProblem

    @hookimpl
    def connet_plugin_keys():
        return [PluginKey("greeting", "string", doc="What the server says first.", section="server"),
                PluginKey("rule", "tables", doc="rules", section="server", fields=(("name-matches", "regex"),))]

    @hookimpl
    def connet_check_settings(section, plugin_settings):
        if section == "server" and str(plugin_settings.get("greeting") or "").isupper():
            raise SettingProblem("greeting", "do not shout")
"""


def connet(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    site = plugin_on_path(tmp_path / "site", "welcome", "welcome_plugin", PLUGIN)
    return subprocess.run([sys.executable, "-m", "connet_core.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **site, **(env or {})}, timeout=60)


def test_an_installed_plugins_section_key_has_a_flag_and_connet_check_validates_it(tmp_path, certs):
    help_text = connet(tmp_path, "server", "--help").stdout
    assert "--greeting TOKEN" in help_text and "What the server says first." in help_text
    assert "[[server.rule]]" in help_text  # an array of tables: file only, said so
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, "greeting = 2\n"))
    result = connet(tmp_path, "check", "--config", str(config))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"connet: error: {config}: server.greeting: expected a string, got an integer"], result.stderr
    config.write_text(server_toml(certs, 'greeting = "hi"\n'))
    assert connet(tmp_path, "check", "--config", str(config)).returncode == 0
    result = connet(tmp_path, "check", "--config", str(config), env={"CONNET_SERVER__GREETNG": "x"})
    assert result.returncode == 2 and "server.greetng: unknown key (did you mean greeting?)" in result.stderr


class Picky:
    """Checks its settings beyond their types: ``greeting`` may not shout."""

    @hookimpl
    def connet_plugin_keys(self):
        return [PluginKey("greeting", "string", doc="what to say", section="server")]

    @hookimpl
    def connet_check_settings(self, section, plugin_settings, files):
        if section == "server" and str(plugin_settings.get("greeting") or "").isupper():
            raise SettingProblem("greeting", "do not shout")
        if section == "server" and plugin_settings.get("greeting") is None:
            raise SettingProblem(None, "greeting is required")


def test_a_plugins_own_check_is_called_through_the_facade():
    hooks = plugins.load_hooks(disable=["tokens"], extra_plugins=[Picky()],
                               plugin_settings={"Picky": {"greeting": "HELLO"}})
    with pytest.raises(SettingProblem, match="do not shout"):
        hooks.check_settings("server", files=False)
    assert hooks.check_settings("control", files=False) is None
    quiet = plugins.load_hooks(disable=["tokens"], extra_plugins=[Picky()],
                               plugin_settings={"Picky": {"greeting": "hello"}})
    assert quiet.check_settings("server", files=True) is None


def test_an_installed_plugins_own_check_is_one_line_exit_2_in_connet_check(tmp_path, certs):
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, 'greeting = "HELLO"\n'))
    result = connet(tmp_path, "check", "--config", str(config))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"connet: error: {config}: server.greeting: do not shout"], result.stderr

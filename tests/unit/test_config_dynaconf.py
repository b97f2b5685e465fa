"""The layering through dynaconf (connet_core/config/merge.py): files, ``CONNET_*`` variables
and flags for the same key, the origin named in errors, and each way dynaconf would change
user data kept out (array concatenation, string metavalues, case-folded names, its own
environment variables and files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connet_core.config import Config, load_config
from connet_core.errors import ConfigError
from connet_core.model import HostPort

TRANSPORTS = ("auto", "aioquic")


def config_tokens(server):
    """``[server] tokens`` as the tokens plugin gets it."""
    return server.common.plugins["tokens"]["tokens"]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def load(command: str, files: list[Path], flags: dict[str, object] | None = None, env: dict[str, str] | None = None) -> Config:
    return load_config(command, files, flags, env or {}, transport_names=TRANSPORTS)


def load_error(command: str, files: list[Path], flags: dict[str, object] | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(command, files, flags, env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_file_variable_and_flag_for_the_same_key(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[client]\ntoken = "t"\nserver-addr = "file-a:1"\nserver-name = "a"\n')
    second = write(tmp_path, "b.toml", '[client]\nserver-addr = "file-b:2"\n')
    env = {"CONNET_CLIENT__SERVER_ADDR": "env:3"}

    files_only = load("client", [first, second])
    assert files_only.client is not None and files_only.client.server_addr == HostPort("file-b", 2)
    assert files_only.sources["client.server-addr"] == str(second)
    assert files_only.sources["client.server-name"] == str(first)  # merged key by key

    with_env = load("client", [first, second], env=env)
    assert with_env.client is not None and with_env.client.server_addr == HostPort("env", 3)
    assert with_env.sources["client.server-addr"] == "CONNET_CLIENT__SERVER_ADDR"

    with_flag = load("client", [first, second], {"client.server-addr": "flag:4"}, env)
    assert with_flag.client is not None and with_flag.client.server_addr == HostPort("flag", 4)
    assert with_flag.sources["client.server-addr"] == "flag --server-addr"
    assert with_flag.client.server_name == "a" and with_flag.sources["client.server-name"] == str(first)


def test_errors_name_the_source_of_the_winning_value(tmp_path: Path) -> None:
    good = write(tmp_path, "good.toml", '[client]\ntoken = "t"\nserver-addr = "ok:1"\n')
    bad = write(tmp_path, "bad.toml", '[client]\nserver-addr = "no-port"\n')
    assert load_error("client", [good, bad]).startswith(f"{bad}: client.server-addr: ")
    # a later layer that fixes the value hides the bad one
    assert load("client", [good, bad], env={"CONNET_CLIENT__SERVER_ADDR": "ok:2"}).client is not None
    message = load_error("client", [good], env={"CONNET_CLIENT__SERVER_ADDR": "no-port"})
    assert message.startswith("CONNET_CLIENT__SERVER_ADDR: client.server-addr: ")
    message = load_error("client", [bad], {"client.server-addr": "still-no-port"})
    assert message.startswith("flag --server-addr: client.server-addr: ")


def test_unknown_key_names_the_file_that_has_it(tmp_path: Path) -> None:
    good = write(tmp_path, "good.toml", '[client]\ntoken = "t"\n')
    typo = write(tmp_path, "typo.toml", '[client]\nserver-adr = "h:1"\n')
    assert load_error("client", [good, typo]) == f"{typo}: client.server-adr: unknown key (did you mean server-addr?)"


def test_dynaconf_keys_in_a_file_are_unknown_keys(tmp_path: Path) -> None:
    # dynaconf would load the files named by dynaconf_include (a FIFO would hang it)
    path = write(tmp_path, "c.toml", 'dynaconf_include = ["/dev/zero"]\n[client]\ntoken = "t"\n')
    assert load_error("client", [path]).startswith(f"{path}: dynaconf_include: unknown key")
    nested = write(tmp_path, "n.toml", '[client]\ntoken = "t"\ndynaconf_merge = true\n')
    assert load_error("client", [nested]).startswith(f"{nested}: client.dynaconf_merge: unknown key")


def test_arrays_from_a_later_layer_replace_earlier_ones(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "a.toml",
        '[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["a", "b"]\n'
        '[[server.token-ip-restriction]]\nallow-cidrs = ["10.0.0.0/8"]\n'
        '[[server.token-ip-restriction]]\nallow-cidrs = ["10.0.0.0/8"]\n',
    )
    second = write(
        tmp_path, "b.toml", '[server]\ntokens = ["c"]\n[[server.token-ip-restriction]]\ndeny-cidrs = ["10.1.0.0/16"]\n'
    )
    server = load("server", [first, second]).server
    assert server is not None
    values = server.common.plugins["tokens"]  # the tokens plugin's [server] keys
    assert values["tokens"] == ("c",)
    assert values["token-ip-restriction"] is not None and len(values["token-ip-restriction"]) == 1
    server = load("server", [first, second], env={"CONNET_SERVER__TOKENS": '["e"]'}).server
    assert server is not None and config_tokens(server) == ("e",)


@pytest.mark.parametrize(
    "token",
    ["@del", "@int 7", "@format {env[HOME]}", "@jinja {{ this }}", "@json [1]", "dynaconf_merge", "@merge a=1"],
)
def test_string_values_reach_the_settings_unchanged(token: str, tmp_path: Path) -> None:
    escaped = token.replace("\\", "\\\\").replace('"', '\\"')
    path = write(tmp_path, "c.toml", f'[client]\ntoken = "{escaped}"\n')
    config = load("client", [path])
    assert config.client is not None and config.client.token == token
    config = load("client", [], env={"CONNET_CLIENT__TOKEN": token})
    assert config.client is not None and config.client.token == token


def test_array_items_dynaconf_treats_as_markers_are_kept(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["x", "dynaconf_merge"]\n')
    second = write(tmp_path, "b.toml", '[server]\ntokens = ["dynaconf_merge_unique", "y"]\n')
    server = load("server", [first]).server
    assert server is not None and config_tokens(server) == ("x", "dynaconf_merge")
    server = load("server", [first, second]).server
    assert server is not None and config_tokens(server) == ("dynaconf_merge_unique", "y")


@pytest.mark.parametrize("raw", ["1234", "007", "true", "0x10", "1e3", "1_000", "[1]", "inf"])
def test_environment_values_are_not_parsed_as_toml(raw: str) -> None:
    config = load("client", [], env={"CONNET_CLIENT__TOKEN": raw, "CONNET_CLIENT__SERVER_NAME": raw})
    assert config.client is not None and config.client.token == raw


def test_named_tables_keep_their_case_and_dots_across_files(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "a.toml",
        '[client]\ntoken = "t"\n[client.destinations.Web]\naddr = "127.0.0.1:1"\n'
        '[client.destinations."a.b"]\naddr = "127.0.0.1:2"\n',
    )
    second = write(
        tmp_path,
        "b.toml",
        '[client.destinations.web]\naddr = "127.0.0.1:3"\n[client.destinations."a.b"]\nroute = "relay"\n',
    )
    client = load("client", [first, second]).client
    assert client is not None
    by_name = {d.name: d for d in client.destinations}
    assert set(by_name) == {"Web", "web", "a.b"}
    assert by_name["Web"].addr == HostPort("127.0.0.1", 1) and by_name["web"].addr == HostPort("127.0.0.1", 3)
    assert by_name["a.b"].addr == HostPort("127.0.0.1", 2) and by_name["a.b"].route.value == "relay"


def test_a_named_table_without_addr_names_the_file_that_defined_it(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[client]\ntoken = "t"\n')
    second = write(tmp_path, "b.toml", '[client.destinations.web]\nroute = "relay"\n')
    assert load_error("client", [first, second]) == f"{second}: client.destinations.web.addr: required"


def test_token_groups_across_layers(tmp_path: Path) -> None:
    token_file = write(tmp_path, "token.txt", "from-file\n")
    path = write(tmp_path, "c.toml", f'[client]\ntoken-file = "{token_file}"\n')
    assert load("client", [path]).client.token == "from-file"  # type: ignore[union-attr]
    config = load("client", [path], env={"CONNET_CLIENT__TOKEN": "from-env"})
    assert config.client is not None and config.client.token == "from-env"
    config = load("client", [path], {"client.token": "from-flag"}, {"CONNET_CLIENT__TOKEN_FILE": str(token_file)})
    assert config.client is not None and config.client.token == "from-flag"


def test_dynaconf_variables_and_files_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ``connet check`` with every variable dynaconf would follow to a file pointing at
    a FIFO (opening it would block forever) and DYNACONF_* values that would change keys."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    write(tmp_path, "settings.toml", '[client]\nserver-addr = "no-port-from-settings-toml"\n')
    # were this .env loaded into the environment, the check would fail on the address
    write(tmp_path, ".env", "CONNET_CLIENT__SERVER_ADDR=no-port-from-dotenv\n")
    config = write(tmp_path, "c.toml", '[client]\ntoken = "t"\n')
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONNET_", "DYNACONF"))}
    env = {
        **clean,
        **{
            name: str(fifo)
            for name in (
                "SETTINGS_FILE_FOR_DYNACONF",
                "SETTINGS_FILES_FOR_DYNACONF",
                "INCLUDES_FOR_DYNACONF",
                "PRELOAD_FOR_DYNACONF",
                "SECRETS_FOR_DYNACONF",
                "DOTENV_PATH_FOR_DYNACONF",
            )
        },
        "LOAD_DOTENV_FOR_DYNACONF": "true",
        "ENVVAR_PREFIX_FOR_DYNACONF": "false",
        "AUTO_CAST_FOR_DYNACONF": "true",
        "DYNACONF_CLIENT__SERVER_NAME": "from-dynaconf-variable",
        "DYNACONF_LOG_LEVEL": "error",
    }
    result = subprocess.run(
        [sys.executable, "-m", "connet_core.cli", "check", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # and in-process, against what the settings hold (the FIFO ones left out: they would hang)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        if value != str(fifo):
            monkeypatch.setenv(name, value)
    loaded = load_config("client", [config], None, None, transport_names=TRANSPORTS)
    assert loaded.client is not None and loaded.client.server_name == "localhost"
    assert loaded.common.log_level == "info"

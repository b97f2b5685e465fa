"""The daemons' flags are derived from the schema: every key of [server], [control] and
[relay] has one (so flags, files and CONNET_* variables cannot drift), they land where the
file key would, and they name themselves in errors. Also ``connet version`` and shell
completion, through the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from connet_core import cli
from connet_core.config import SCHEMA, _Array, _Leaf, _Named, load_config
from connet_core.config.flags import DAEMON_SECTIONS, daemon_flags, file_only_tables, flag_values, with_plugin_keys
from connet_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TRANSPORTS = ("auto", "aioquic")


def leaf_paths(schema: dict, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, spec in schema.items():
        if isinstance(spec, _Leaf):
            out.append((*path, key))
        elif isinstance(spec, dict):
            out.extend(leaf_paths(spec, (*path, key)))
    return out


def array_tables(schema: dict, path: tuple[str, ...]) -> list[str]:
    return [f"[[{'.'.join((*path, key))}]]" for key, spec in schema.items() if isinstance(spec, _Array)]


def options_of(command: str) -> dict[str, object]:
    """The click options of ``connet COMMAND``: flag -> option."""
    group = cli.cli
    assert isinstance(group, cli.click.Group)
    command_object = group.get_command(cli.click.Context(group), command)  # with the plugins' keys' flags
    assert command_object is not None
    params = command_object.params
    return {opt: param for param in params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize("section", DAEMON_SECTIONS)
def test_every_key_of_the_section_has_a_flag(section: str) -> None:
    FULL = with_plugin_keys()[0]  # connet's keys and the installed plugins' ([server] tokens: the tokens plugin's)
    options = options_of(section)
    expected = {"--" + "-".join(path[1:]) for path in leaf_paths(FULL[section], (section,))}  # type: ignore[arg-type]
    assert expected and expected <= set(options)
    for path in leaf_paths(FULL[section], (section,)):  # type: ignore[arg-type]
        option = options["--" + "-".join(path[1:])]
        spec = FULL[section]
        for part in path[1:]:
            spec = spec[part]  # type: ignore[index]
        assert getattr(option, "multiple") == (spec.kind in ("strings", "cidrs")), path  # type: ignore[union-attr]
        assert getattr(option, "help"), path
    # nothing but arrays of tables is left out, and --help says they are file-only
    assert not [k for k, s in FULL[section].items() if isinstance(s, _Named)]  # type: ignore[union-attr]
    assert file_only_tables(section) == array_tables(FULL[section], (section,))  # type: ignore[arg-type]
    help_text = " ".join(CliRunner().invoke(cli.cli, [section, "--help"], terminal_width=400).output.split())
    for table in file_only_tables(section):
        assert table in help_text
    if file_only_tables(section):
        assert "set them in a --config file" in help_text


def test_every_client_key_has_a_flag() -> None:
    group = cli.cli
    options = {opt for param in group.params for opt in getattr(param, "opts", [])}
    expected = {"--" + "-".join(path[1:]) for path in leaf_paths(SCHEMA["client"], ("client",))}  # type: ignore[arg-type]
    assert expected <= options
    # a destination and a source: --dst-name/--dst-addr/--dst-route and the same for --src-
    for prefix in ("dst", "src"):
        assert {f"--{prefix}-name", f"--{prefix}-addr", f"--{prefix}-route"} <= options


def test_client_server_name_flag(tmp_path: Path) -> None:
    result = run_connet("check", "--as", "client", env={"CONNET_CLIENT__TOKEN": "t"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bad = run_connet("--token", "t", "--server-name", "a b", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("connet: error: flag --server-name: client.server-name: ")


def test_flags_land_where_the_file_keys_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # relative paths: the cwd for flags, the file's directory for the file; both tmp_path here
    monkeypatch.chdir(tmp_path)
    specs = daemon_flags("server")
    values = {
        "tokens": ("a", "b"),
        "cert_file": "c.pem",
        "key_file": "k.pem",
        "addr": "127.0.0.1:0",
        "relay_hostname": "relay.example",
        "ip_restriction_allow_cidrs": ("10.0.0.0/8", "::1/128"),
        "ip_restriction_deny_cidrs": (),
        "store_dir": None,
    }
    flags = flag_values(specs, values)
    from_flags = load_config("server", [], flags, {}, transport_names=TRANSPORTS)
    config = tmp_path / "s.toml"
    config.write_text(
        '[server]\ntokens = ["a", "b"]\ncert-file = "c.pem"\nkey-file = "k.pem"\naddr = "127.0.0.1:0"\n'
        'relay-hostname = "relay.example"\n[server.ip-restriction]\nallow-cidrs = ["10.0.0.0/8", "::1/128"]\n'
    )
    from_file = load_config("server", [config], None, {}, transport_names=TRANSPORTS)
    assert from_flags.server == from_file.server
    assert from_flags.sources["server.ip-restriction.allow-cidrs"] == "flag --ip-restriction-allow-cidrs"


def test_a_bad_flag_value_names_the_flag() -> None:
    flags = flag_values(daemon_flags("control"), {"relay_ip_restriction_deny_cidrs": ("not-a-cidr",)})
    with pytest.raises(ConfigError) as info:
        load_config("control", [], flags, {}, transport_names=TRANSPORTS)
    assert str(info.value).startswith(
        "flag --relay-ip-restriction-deny-cidrs: control.relay-ip-restriction.deny-cidrs: 'not-a-cidr' is not a CIDR"
    )


def run_connet(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("CONNET_", "_CONNET"))}
    return subprocess.run(
        [sys.executable, "-m", "connet_core.cli", *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_relay_check_from_flags_alone(tmp_path: Path) -> None:
    result = run_connet(
        "check", "--as", "relay", cwd=tmp_path, env={"CONNET_RELAY__TOKEN": "r"}
    )
    assert result.returncode == 0, result.stderr
    bad = run_connet("relay", "--token", "r", "--control-addr", "nohost", cwd=tmp_path)
    assert bad.returncode == 2
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("connet: error: flag --control-addr: relay.control-addr: ")


def test_version_names_connet_python_the_quic_libraries_and_auto() -> None:
    import importlib.metadata
    import platform

    result = run_connet("version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("connet ")
    assert lines[1] == f"Python {platform.python_version()} ({platform.python_implementation()})"
    assert lines[2] == f"aioquic {importlib.metadata.version('aioquic')}"
    assert lines[3] == f"qh3 {importlib.metadata.version('qh3')}"
    from connet_core.plugins import load_hooks

    assert lines[4] == f"transport auto: {load_hooks().transport('auto').name}"
    assert lines[4] in ("transport auto: qh3", "transport auto: aioquic")
    # with qh3 unable to import, auto falls back to aioquic (a module shadowing it that raises)
    shadow = Path(__file__).parent / "_no_qh3"
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    fallback = run_connet("version", env=env)
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.splitlines()[4] == "transport auto: aioquic"


def test_shell_completion() -> None:
    source = run_connet("version", env={"_CONNET_COMPLETE": "bash_source"})
    assert source.returncode == 0 and "_CONNET_COMPLETE=bash_complete" in source.stdout
    words = run_connet(env={"_CONNET_COMPLETE": "bash_complete", "COMP_WORDS": "connet server --ip-re", "COMP_CWORD": "2"})
    assert words.returncode == 0
    assert set(words.stdout.split()) == {
        "plain,--ip-restriction-allow-cidrs",
        "plain,--ip-restriction-deny-cidrs",
    }
    commands = run_connet(env={"_CONNET_COMPLETE": "bash_complete", "COMP_WORDS": "connet ve", "COMP_CWORD": "1"})
    assert commands.stdout.split() == ["plain,version"]


def test_the_docs_name_the_file_only_tables_and_completion() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    flags_part = doc[doc.index("## Flags") : doc.index("## Limits on files and values")]
    for section in DAEMON_SECTIONS:
        for table in file_only_tables(section):
            assert f"`{table}`" in flags_part
    assert "_CONNET_COMPLETE=bash_source connet" in flags_part

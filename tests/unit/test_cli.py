"""The ``connet`` command line: help, flags -> configuration, one-line errors."""

from __future__ import annotations

import importlib.abc
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from connet_core import cli
from connet_core.config import Config
from connet_core.model import HostPort, Role, RoutePolicy

COMMANDS = ("server", "control", "relay", "tui", "cert", "check")


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.fixture
def no_connet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CONNET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch, no_connet_env: None) -> list[Config]:
    """Replace the runner (and the logging set-up) so daemon commands return the config."""
    import connet_core.logs
    import connet_core.runner

    configs: list[Config] = []

    def fake_run(config: Config) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr(connet_core.runner, "run", fake_run)
    monkeypatch.setattr(connet_core.logs, "setup_logging", lambda level, fmt: None)
    return configs


def test_help_lists_every_command_from_the_console_script() -> None:
    script = Path(sys.executable).with_name("connet")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "connet_core.cli"]
    result = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:", 1)[1]
    for command in COMMANDS:
        assert f"\n  {command} " in commands
    for flag in ("--config", "--log-level", "--log-format", "--transport", "--token", "--dst-name", "--src-route"):
        assert flag in result.stdout
    assert "localhost:19190" in result.stdout  # defaults are shown


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("cert", "tui")])
def test_every_command_has_help_with_the_common_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([command, "--help"], capsys)
    assert code == 0
    for flag in ("--config", "--log-level", "--log-format", "--transport"):
        assert flag in out


@pytest.mark.parametrize("argv, message", [
    (["--log-level", "debug", "tui"], "--log-level does not apply to 'tui'"),
    (["--config", "x.toml", "cert"], "--config does not apply to 'cert'"),
    (["--config", "x.toml", "tui"], "--config goes after the command"),
])
def test_an_option_before_a_command_that_does_not_take_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_cert_help_lists_only_what_cert_uses(capsys: pytest.CaptureFixture[str]) -> None:
    """cert reads no configuration and runs no transport (issue 18)."""
    code, out, _ = run_main(["cert", "--help"], capsys)
    assert code == 0
    assert "--out" in out and "--host" in out
    for flag in ("--config", "--log-level", "--log-format", "--transport"):
        assert flag not in out


@pytest.mark.parametrize("command", ["", *COMMANDS, "version"])
def test_help_names_only_files_that_exist(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Help that points somewhere points at a file of the repository (issue 18: it named a file users do not have)."""
    code, out, _ = run_main([*command.split(), "--help"], capsys)
    assert code == 0
    root = Path(__file__).resolve().parents[2]
    for name in re.findall(r"[\w/.-]+\.md\b", out):
        assert (root / name).is_file(), f"connet {command} --help names {name}, which is not in the repository"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and out.startswith("connet, version ")


def test_flag_only_client(captured_run: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        [
            "--token", "007",
            "--server-addr", "[::1]:19190",
            "--direct-addr", ":0",
            "--status-addr", "127.0.0.1:0",
            "--dst-name", "web", "--dst-addr", "localhost:8080", "--dst-route", "direct",
            "--src-name", "db", "--src-addr", "127.0.0.1:9000",
            "--log-level", "debug",
            "--transport", "aioquic",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    (config,) = captured_run
    assert config.command == "client" and config.client is not None
    client = config.client
    assert client.token == "007"
    assert client.server_addr == HostPort("::1", 19190) and client.server_name == "::1"
    assert client.direct_addr == HostPort("", 0) and client.status_addr == HostPort("127.0.0.1", 0)
    (dst,) = client.destinations
    assert (dst.name, dst.role, dst.addr, dst.route) == ("web", Role.DESTINATION, HostPort("localhost", 8080), RoutePolicy.DIRECT)
    (src,) = client.sources
    assert (src.name, src.role, src.addr, src.route) == ("db", Role.SOURCE, HostPort("127.0.0.1", 9000), RoutePolicy.ANY)
    assert config.common.log_level == "debug"
    assert config.sources["client.token"] == "flag --token"
    assert config.sources["client.destinations.web.route"] == "flag --dst-route"


def test_flags_beat_the_file(captured_run: list[Config], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[client]\ntoken-file = "missing"\nserver-addr = "file:1"\n[client.destinations.web]\naddr = "h:1"\n')
    code, _, err = run_main(["--config", str(path), "--token", "t", "--dst-name", "web", "--dst-route", "relay"], capsys)
    assert code == 0, err
    client = captured_run[0].client
    assert client is not None and client.token == "t" and client.server_addr == HostPort("file", 1)
    assert client.destinations[0].addr == HostPort("h", 1) and client.destinations[0].route is RoutePolicy.RELAY


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--token", "t", "--dst-addr", "h:1"], "--dst-addr: needs --dst-name"),
        (["--token", "t", "--src-name", "db"], "--src-name: needs --src-addr"),
        (["--token", "t", "--server-addr", "nowhere"], "flag --server-addr: client.server-addr"),
        (["--log-level", "debug", "relay"], "--log-level goes after the command"),
        (["--dst-name", "web", "--dst-addr", "h:1"], "client: token or token-file is required"),
        (["--no-such-flag"], "--no-such-flag"),
        (["cert", "--bogus"], "--bogus"),
        (["check", "--as", "bogus"], "--as"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], fragment: str, captured_run: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert err.startswith("connet: error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert not captured_run


def test_client_option_before_subcommand_is_refused(captured_run: list[Config], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["--server-addr", "h:1", "relay"], capsys)
    assert code == 2 and "--server-addr is a client option" in err and err.count("\n") == 1


def test_daemon_commands_run_their_section(
    captured_run: list[Config], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "r.toml"
    path.write_text('[relay]\ntoken = "r"\ncontrol-addr = "ctl:1"\n')
    code, _, err = run_main(["relay", "--config", str(path), "--log-format", "json"], capsys)
    assert code == 0, err
    config = captured_run[0]
    assert config.command == "relay" and config.relay is not None and config.relay.control_name == "ctl"
    assert config.common.log_format == "json"


def test_runner_exit_code_is_the_process_exit_code(
    captured_run: list[Config], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import connet_core.runner

    monkeypatch.setattr(connet_core.runner, "run", lambda config: 3)
    code, _, _ = run_main(["--token", "t"], capsys)
    assert code == 3


def test_cert_writes_files_and_says_how_to_use_them(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(["cert", "--out", str(tmp_path / "certs"), "--host", "localhost"], capsys)
    assert code == 0, err
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        assert (tmp_path / "certs" / name).is_file()
        assert name in out
    assert "server-cas" in out and "cert-file" in out


def test_check_with_inferred_and_explicit_kind(
    no_connet_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "both.toml"
    path.write_text('[client]\ntoken = "t"\n[relay]\ntoken = "r"\n')
    code, out, err = run_main(["check", "--config", str(path)], capsys)
    assert code == 0, err
    assert out.startswith("ok: client: ") and "; relay: " in out
    code, out, _ = run_main(["check", "--as", "relay", "--config", str(path)], capsys)
    assert code == 0 and out.startswith("ok: relay: ")


class _TextualMissing(importlib.abc.MetaPathFinder):
    """Make ``connet_tui.app`` fail to import exactly as it does without Textual."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "connet_tui.app" or name == "textual" or name.startswith("textual."):
            raise ModuleNotFoundError("No module named 'textual'", name="textual")
        return None


def test_tui_without_textual_says_which_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delitem(sys.modules, "connet_tui.app", raising=False)
    # an earlier test may have imported it: the package then holds it as an attribute
    import connet_tui

    monkeypatch.delattr(connet_tui, "app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_TextualMissing(), *sys.meta_path])
    code, out, err = run_main(["tui", "http://127.0.0.1:1/"], capsys)
    assert code == 1
    assert err.strip() == cli.TUI_EXTRA_HINT


def test_tui_gets_urls_from_arguments_and_configs(
    no_connet_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("connet_tui.app")
    fake.run = lambda urls: seen.append(list(urls))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "connet_tui.app", fake)
    import connet_tui

    monkeypatch.setattr(connet_tui, "app", fake, raising=False)
    path = tmp_path / "c.toml"
    path.write_text('[client]\ntoken = "t"\nstatus-addr = ":19182"\n')
    code, _, err = run_main(["tui", "http://10.0.0.1:1/", "--config", str(path)], capsys)
    assert code == 0, err
    assert seen == [["http://10.0.0.1:1/", "http://127.0.0.1:19182/"]]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_tui_reads_each_config_file_on_its_own(
    no_connet_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Three daemons' files, partial ones too: three URLs, not the last file's (issue 18)."""
    seen: list[list[str]] = []
    fake = types.ModuleType("connet_tui.app")
    fake.run = lambda urls: seen.append(list(urls))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "connet_tui.app", fake)
    import connet_tui

    monkeypatch.setattr(connet_tui, "app", fake, raising=False)
    files = []
    for name, text in (("a", '[client]\nstatus-addr = "127.0.0.1:19182"\n'),  # no token: partial
                       ("b", '[client]\nstatus-addr = "127.0.0.1:19183"\n[client.sources.web]\naddr = ":9000"\n'),
                       ("c", '[server]\nstatus-addr = "[::1]:19180"\n')):
        files += ["--config", str(write(tmp_path, f"{name}.toml", text))]
    code, _, err = run_main(["tui", *files], capsys)
    assert code == 0, err
    assert seen == [["http://127.0.0.1:19182/", "http://127.0.0.1:19183/", "http://[::1]:19180/"]]


@pytest.mark.parametrize("text, needle", [
    ('[client]\ntoken = "t"\n', "no status-addr"),
    ('[client]\nstatus-addr = "nope"\n', "client.status-addr"),
    ('[relay]\nstatus-addr = "127.0.0.1:0"\n', "relay.status-addr"),
])
def test_tui_config_without_a_usable_status_addr(
    no_connet_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, needle: str
) -> None:
    path = write(tmp_path, "x.toml", text)
    code, _, err = run_main(["tui", "--config", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err and needle in err, err


def test_tui_without_urls_is_a_usage_error(no_connet_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["tui"], capsys)
    assert code == 2 and "STATUS-URL" in err and err.count("\n") == 1


@pytest.mark.parametrize(("flag", "expected"), [("--no-port-mapping", False), ("--port-mapping", True)])
def test_port_mapping_flag(captured_run: list[Config], capsys: pytest.CaptureFixture[str], flag: str, expected: bool) -> None:
    code, _, err = run_main(["--token", "t", flag], capsys)
    assert code == 0, err
    assert captured_run[0].client is not None and captured_run[0].client.port_mapping is expected

"""compose.yaml, checked without a container engine: each connet service's command is one the
CLI accepts, its CONNET_* variables are keys of its section, and the ports it publishes are
the ones it binds. (tests/deploy/test_container.py runs the same kinds of containers.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import pytest

from connet_core.cli import cli
from connet_core.config import load_config
from deploy.conftest import ROOT, require


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    require(None if importlib.util.find_spec("yaml") else "PyYAML is missing (pip install '.[test]')")
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return compose["services"]


def _connet_services(services: dict[str, dict]) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("build") == "."}


def test_compose_has_a_server_and_two_clients_of_the_image(services: dict[str, dict]) -> None:
    connet = _connet_services(services)
    commands = {name: s["command"][0] for name, s in connet.items()}
    assert commands["server"] == "server"
    assert [n for n, c in commands.items() if c.startswith("--")] == ["destination", "source"]


def test_every_connet_service_parses_and_its_variables_are_keys(services: dict[str, dict], tmp_path: Path) -> None:
    for name, service in _connet_services(services).items():
        args = service["command"]
        # click parses the arguments as `connet` would, without running anything: a flag
        # that does not exist, or lacks its value, raises UsageError
        if args[0].startswith("-"):
            cli.make_context("connet", list(args))
        else:
            command = cli.get_command(click.Context(cli), args[0])
            assert command is not None, f"{name}: unknown command {args[0]}"
            command.make_context(args[0], list(args[1:]))
        env = {key: str(value) for key, value in (service.get("environment") or {}).items()}
        assert all(key.startswith("CONNET_") for key in env), name
        if name == "server":
            config = load_config("server", [], environ=env)
            assert config.server is not None and config.server.relay_hostname == "server"
            assert config.common.plugins["tokens"]["tokens"] is not None


def test_published_ports_are_the_defaults_the_services_bind(services: dict[str, dict]) -> None:
    assert services["server"]["ports"] == ["19190:19190/udp", "19191:19191/udp"]
    assert services["source"]["ports"] == ["127.0.0.1:9000:9000/tcp"]
    assert "--src-addr" in services["source"]["command"]
    assert services["source"]["command"][services["source"]["command"].index("--src-addr") + 1] == ":9000"


def test_a_misspelled_flag_is_refused_by_the_parse_the_test_relies_on() -> None:
    with pytest.raises(click.UsageError):
        cli.make_context("connet", ["--src-nmae", "web"])

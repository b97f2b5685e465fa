"""The keys of load balancing, the PROXY protocol, metadata, handshake-idle-timeout and
endpoint expiry: files, CONNET_* variables, flags, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from connet_core.config import load_config
from connet_core.errors import ConfigError
from connet_core.config.flags import daemon_flags

TRANSPORTS = ("auto", "aioquic")


def load(command: str, text: str, tmp_path: Path, env: dict[str, str] | None = None,
         flags: dict[str, object] | None = None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(command, [path], flags, env or {}, transport_names=TRANSPORTS)


def error(command: str, text: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(command, text, tmp_path, env)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def server_toml() -> str:
    return '[server]\ncert-file = "c.pem"\nkey-file = "k.pem"\ntokens = ["t"]\n'


CLIENT = '''[client]
token = "t"
metadata = "home lab"
handshake-idle-timeout = "1m30s"
[client.destinations.web]
addr = ":8080"
proxy-proto-version = "v2"
dial-timeout = "500ms"
[client.sources.web]
addr = ":9000"
lb-policy = "round-robin"
lb-retry = "timed"
lb-retry-max = 1500
dial-timeout = 2
'''


def test_client_keys(tmp_path: Path) -> None:
    client = load("client", CLIENT, tmp_path).client
    assert client is not None
    assert client.metadata == "home lab" and client.handshake_idle_timeout == 90.0
    (dst,), (src,) = client.destinations, client.sources
    assert (dst.proxy_proto_version, dst.dial_timeout) == ("v2", 0.5)
    assert (src.lb_policy, src.lb_retry, src.lb_retry_max, src.dial_timeout) == ("round-robin", "timed", 1500, 2.0)


def test_client_defaults(tmp_path: Path) -> None:
    client = load("client", '[client]\ntoken = "t"\n[client.sources.web]\naddr = ":9000"\n', tmp_path).client
    assert client is not None and client.metadata == "" and client.handshake_idle_timeout is None
    (src,) = client.sources
    assert (src.lb_policy, src.lb_retry, src.lb_retry_max, src.dial_timeout) == ("", "", 0, None)


def test_client_environment(tmp_path: Path) -> None:
    env = {"CONNET_CLIENT__METADATA": "from env", "CONNET_CLIENT__HANDSHAKE_IDLE_TIMEOUT": "10"}
    client = load("client", '[client]\ntoken = "t"\n', tmp_path, env).client
    assert client is not None and (client.metadata, client.handshake_idle_timeout) == ("from env", 10.0)


@pytest.mark.parametrize(("line", "fragment"), [
    ('lb-policy = "fastest"', "'fastest' is not one of"),
    ('lb-retry = "sometimes"', "'sometimes' is not one of"),
    ("lb-retry-max = -1", "out of range"),
    ('lb-retry-max = "many"', "expected a whole number"),
    ('dial-timeout = "soon"', "is not a duration"),
    ('dial-timeout = "48h"', "out of range"),
])
def test_source_key_errors(tmp_path: Path, line: str, fragment: str) -> None:
    message = error("client", f'[client]\ntoken = "t"\n[client.sources.web]\naddr = ":9000"\n{line}\n', tmp_path)
    assert "client.sources.web." in message and fragment in message


def test_bad_proxy_proto_version(tmp_path: Path) -> None:
    message = error("client", '[client]\ntoken = "t"\n[client.destinations.web]\naddr = ":1"\n'
                              'proxy-proto-version = "v3"\n', tmp_path)
    assert "proxy-proto-version" in message and "v1, v2" in message


@pytest.mark.parametrize(("value", "fragment"), [("x" * 129, "at most 128"), ("a\\nb", "printable")])
def test_bad_metadata(tmp_path: Path, value: str, fragment: str) -> None:
    message = error("client", f'[client]\ntoken = "t"\nmetadata = "{value}"\n', tmp_path)
    assert "client.metadata" in message and fragment in message


def test_endpoint_expiry(tmp_path: Path, server_toml: str) -> None:
    server = load("server", server_toml, tmp_path).server
    assert server is not None and server.control.endpoint_expiry == 30.0
    server = load("server", server_toml + 'endpoint-expiry-timeout = "5s"\nhandshake-idle-timeout = "1m"\n', tmp_path).server
    assert server is not None and server.control.endpoint_expiry == 5.0
    assert server.control.handshake_idle_timeout == 60.0
    server = load("server", server_toml, tmp_path, {"CONNET_SERVER__ENDPOINT_EXPIRY_DISABLE": "true"}).server
    assert server is not None and server.control.endpoint_expiry == 0.0
    server = load("server", server_toml, tmp_path, flags={"server.endpoint-expiry-timeout": "2s"}).server
    assert server is not None and server.control.endpoint_expiry == 2.0
    message = error("server", server_toml + 'endpoint-expiry-disable = "yes"\n', tmp_path)
    assert "endpoint-expiry-disable" in message and "true or false" in message


def test_daemon_flags_exist() -> None:
    assert {"--endpoint-expiry-timeout", "--endpoint-expiry-disable", "--handshake-idle-timeout"} <= \
        {f.flag for f in daemon_flags("server")}
    assert {"--endpoint-expiry-timeout", "--endpoint-expiry-disable"} <= {f.flag for f in daemon_flags("control")}
    assert {"--metadata", "--handshake-idle-timeout"} <= {f.flag for f in daemon_flags("relay")}


def test_client_endpoint_flags_reach_the_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from connet_core import cli

    seen: dict[str, object] = {}
    runner = CliRunner()

    def fake_run(command: str, files, flags) -> int:
        seen.update(flags)
        return 0

    original = cli.run_daemon
    cli.run_daemon = fake_run
    try:
        result = runner.invoke(cli.cli, ["--token", "t", "--dst-name", "web", "--dst-addr", ":80",
                                         "--dst-proxy-proto-version", "v1", "--src-name", "web", "--src-addr", ":81",
                                         "--src-lb-policy", "random", "--src-lb-retry", "count",
                                         "--src-lb-retry-max", "3", "--src-dial-timeout", "1s"])
    finally:
        cli.run_daemon = original
    assert result.exit_code == 0, result.output
    assert seen["client.destinations.web.proxy-proto-version"] == "v1"
    assert (seen["client.sources.web.lb-policy"], seen["client.sources.web.lb-retry-max"]) == ("random", "3")
    path = tmp_path / "empty.toml"
    path.write_text("")
    client = load_config("client", [path], seen, {}, transport_names=TRANSPORTS).client
    assert client is not None
    (src,) = client.sources
    assert (src.lb_policy, src.lb_retry, src.lb_retry_max, src.dial_timeout) == ("random", "count", 3, 1.0)
    bad = runner.invoke(cli.cli, ["--token", "t", "--src-lb-policy", "random"])
    assert str(bad.exception) == "flag --src-lb-policy: needs --src-name"  # main() prints it, exit 2

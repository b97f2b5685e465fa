"""The keys for networks that block UDP (docs/udp-blocked.md): defaults, types, the
environment, and the one rule between them (udp = "never" needs server-tcp-addr)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connet_core.config import load_config
from connet_core.errors import ConfigError
from connet_core.model import HostPort

TRANSPORTS = ("auto", "aioquic")


def load(command: str, text: str, tmp_path: Path, env: dict[str, str] | None = None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(command, [path], None, env or {}, transport_names=TRANSPORTS)


def test_off_unless_set(tmp_path: Path) -> None:
    client = load("client", '[client]\ntoken = "t"\n', tmp_path).client
    assert client.server_tcp_addr is None and client.udp == "auto"
    relay = load("relay", '[relay]\ntoken = "t"\n', tmp_path).relay
    assert relay.tcp_addr is None


def test_the_keys_and_their_variables(tmp_path: Path) -> None:
    client = load("client", '[client]\ntoken = "t"\nserver-tcp-addr = "example.com:443"\nudp = "never"\n', tmp_path).client
    assert client.server_tcp_addr == HostPort("example.com", 443) and client.udp == "never"
    env = {"CONNET_CLIENT__SERVER_TCP_ADDR": ":443", "CONNET_CLIENT__UDP": "never"}
    client = load("client", '[client]\ntoken = "t"\n', tmp_path, env).client
    assert client.server_tcp_addr == HostPort("localhost", 443) and client.udp == "never"
    relay = load("relay", '[relay]\ntoken = "t"\n', tmp_path, {"CONNET_RELAY__TCP_ADDR": ":443"}).relay
    assert relay.tcp_addr == HostPort("", 443)


def test_server_and_control(tmp_path: Path) -> None:
    from connet_core.certs import write_test_certificates

    certs = write_test_certificates(tmp_path / "certs", ["localhost"])
    files = f'cert-file = "{certs["cert"]}"\nkey-file = "{certs["key"]}"\n'
    server = load("server", f'[server]\ntokens = ["t"]\ntcp-addr = ":443"\nrelay-tcp-addr = ":8443"\n{files}',
                  tmp_path).server
    assert server.control.tcp_addr == HostPort("", 443) and server.relay_tcp_addr == HostPort("", 8443)
    control = load("control", f'[control]\nclient-tokens = ["t"]\ntcp-addr = ":443"\n{files}', tmp_path).control
    assert control.tcp_addr == HostPort("", 443)


@pytest.mark.parametrize(("text", "expected"), [
    ('udp = "never"\n', 'client.udp: "never" needs server-tcp-addr'),
    ('udp = "sometimes"\n', "client.udp: 'sometimes' is not one of auto, never"),
    ('server-tcp-addr = "no-port"\n', "client.server-tcp-addr:"),
    ('server-tcp-addr = "h:0"\n', "port 0 cannot be dialed"),
])
def test_bad_values_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load("client", '[client]\ntoken = "t"\n' + text, tmp_path)
    assert expected in str(info.value) and "\n" not in str(info.value)

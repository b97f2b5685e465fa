"""Configuration loading: defaults, layering, environment typing, origins in errors, and the
real ``connet check`` on broken configurations and on the examples."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connet_core.certs import write_test_certificates
from connet_core.config import Config, check_files, load_config
from connet_core.errors import ConfigError
from connet_core.model import HostPort, Role, RoutePolicy

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TRANSPORTS = ("auto", "aioquic")  # in-process tests need not load the plugins for the transport check


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
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


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_certificates(tmp_path_factory.mktemp("other-certs"), ["localhost"])


# --- defaults -------------------------------------------------------------------------------


def test_client_defaults(tmp_path: Path) -> None:
    config = load("client", [write(tmp_path, "c.toml", '[client]\ntoken = "t"\n')])
    client = config.client
    assert client is not None and config.server is None
    assert config.common.log_level == "info" and config.common.log_format == "text"
    assert config.common.transport == "auto" and config.common.disable_plugins == ()
    assert client.token == "t"
    assert client.server_addr == HostPort("localhost", 19190)
    assert client.server_name == "localhost"
    assert client.server_cas is None
    assert client.direct_addr == HostPort("", 19192)
    assert client.status_addr is None
    assert client.destinations == () and client.sources == ()
    assert client.common == config.common


def test_server_defaults_and_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.toml",
        '[server]\ncert-file = "c.pem"\nkey-file = "k.pem"\ntokens = ["a", "b"]\n',
    )
    config = load("server", [path])
    server = config.server
    assert server is not None
    control = server.control
    tokens, cidr = config.common.plugins["tokens"], config.common.plugins["cidr"]  # the plugins' [server] keys
    assert control.addr == HostPort("", 19190)
    assert server.relay_addr == HostPort("", 19191)
    assert server.relay_hostname == "localhost"
    assert control.cert_file == tmp_path / "c.pem" and control.key_file == tmp_path / "k.pem"
    assert tokens["tokens"] == ("a", "b")
    assert tokens["token-restriction"] is None and tokens["token-ip-restriction"] is None
    assert cidr == {"ip-restriction": None}
    assert control.accept_relays is False
    assert control.store_dir is None and control.status_addr is None


def test_control_maps_tokens_and_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
[control]
cert-file = "c.pem"
key-file = "k.pem"
client-tokens-file = "tokens.txt"
relay-tokens = ["r"]
[control.client-ip-restriction]
deny-cidrs = ["192.0.2.0/24"]
[[control.client-token-restriction]]
name-matches = "web-.*"
role-matches = "source"
allow-cidrs = ["10.0.0.0/8", "2001:db8::/32"]
[[control.relay-token-ip-restriction]]
allow-cidrs = ["127.0.0.1/32"]
""",
    )
    config = load("control", [path])
    control = config.control
    assert control is not None and control.accept_relays
    tokens, cidr = config.common.plugins["tokens"], config.common.plugins["cidr"]  # the plugins' [control] keys
    assert tokens["client-tokens-file"] == tmp_path / "tokens.txt"
    assert cidr["client-ip-restriction"]["deny-cidrs"] == (ipaddress.ip_network("192.0.2.0/24"),)
    (rule,) = tokens["client-token-restriction"] or ()
    assert rule["name-matches"] == "web-.*" and Role(rule["role-matches"]) is Role.SOURCE
    assert rule["allow-cidrs"] == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    assert tokens["relay-tokens"] == ("r",)
    assert tokens["relay-token-ip-restriction"] is not None
    assert tokens["relay-token-ip-restriction"][0]["allow-cidrs"] == (ipaddress.ip_network("127.0.0.1/32"),)
    assert "tokens" not in tokens and "ip-restriction" not in cidr  # [server]'s keys: not connet control's


def test_relay_defaults_control_name_from_control_addr(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", '[relay]\ntoken = "r"\ncontrol-addr = "ctl.example:7000"\n')
    relay = load("relay", [path]).relay
    assert relay is not None
    assert relay.control_name == "ctl.example"
    assert relay.addr == HostPort("", 19191) and relay.hostname == "localhost"


def test_destinations_and_sources(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
[client]
token = "t"
[client.destinations.web]
addr = "localhost:8080"
route = "direct"
[client.sources.web]
addr = "127.0.0.1:9000"
[client.sources."db.main"]
addr = "127.0.0.1:9001"
route = "relay"
""",
    )
    client = load("client", [path]).client
    assert client is not None
    (dst,) = client.destinations
    assert (dst.name, dst.role, dst.addr, dst.route) == ("web", Role.DESTINATION, HostPort("localhost", 8080), RoutePolicy.DIRECT)
    assert [(s.name, s.route) for s in client.sources] == [("web", RoutePolicy.ANY), ("db.main", RoutePolicy.RELAY)]


# --- layering -------------------------------------------------------------------------------


def test_two_files_merge_key_by_key_and_replace_arrays(tmp_path: Path) -> None:
    base = write(
        tmp_path,
        "base.toml",
        """
log-level = "debug"
[server]
cert-file = "c.pem"
key-file = "k.pem"
tokens = ["a", "b", "c"]
relay-hostname = "base.example"
[server.ip-restriction]
allow-cidrs = ["10.0.0.0/8"]
""",
    )
    site = write(
        tmp_path / "site",
        "site.toml",
        """
[server]
tokens = ["z"]
relay-hostname = "site.example"
[server.ip-restriction]
deny-cidrs = ["10.1.0.0/16"]
""",
    )
    config = load("server", [base, site])
    assert config.server is not None
    control = config.server.control
    assert config.common.log_level == "debug"  # kept from the first file
    restriction = config.common.plugins["cidr"]["ip-restriction"]
    assert config.common.plugins["tokens"]["tokens"] == ("z",)  # arrays replaced whole
    assert config.server.relay_hostname == "site.example"  # later file wins per key
    assert restriction["allow-cidrs"] == (ipaddress.ip_network("10.0.0.0/8"),)  # tables merge
    assert restriction["deny-cidrs"] == (ipaddress.ip_network("10.1.0.0/16"),)
    assert control.cert_file == tmp_path / "c.pem"
    assert config.sources["server.tokens"] == str(site)
    assert config.sources["server.cert-file"] == str(base)


def test_token_in_one_file_and_token_file_in_another_is_an_error(tmp_path: Path) -> None:
    first = write(tmp_path, "a.toml", '[client]\ntoken = "t"\n')
    second = write(tmp_path, "b.toml", '[client]\ntoken-file = "t.txt"\n')
    message = load_error("client", [first, second])
    assert str(first) in message and str(second) in message and "client.token-file" in message


def test_token_and_token_file_in_one_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.toml", '[client]\ntoken = "t"\ntoken-file = "t.txt"\n')
    message = load_error("client", [path])
    assert str(path) in message and "client.token-file" in message and "not both" in message


def test_environment_beats_files_and_flags_beat_both(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[client]\ntoken = "t"\nserver-addr = "file.example:1"\nstatus-addr = "127.0.0.1:1"\n')
    env = {"CONNET_CLIENT__SERVER_ADDR": "env.example:2", "connet_client__status_addr": "127.0.0.1:2"}
    config = load("client", [path], {"client.status-addr": "127.0.0.1:3"}, env)
    assert config.client is not None
    assert config.client.server_addr == HostPort("env.example", 2)
    assert config.client.server_name == "env.example"
    assert config.client.status_addr == HostPort("127.0.0.1", 3)
    assert config.sources["client.server-addr"] == "CONNET_CLIENT__SERVER_ADDR"
    assert config.sources["client.status-addr"] == "flag --status-addr"


def test_environment_token_replaces_token_file_from_files(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[client]\ntoken-file = "missing.txt"\n')
    config = load("client", [path], env={"CONNET_CLIENT__TOKEN": "from-env"})
    assert config.client is not None and config.client.token == "from-env"


def test_flag_token_file_replaces_environment_token(tmp_path: Path) -> None:
    token_file = write(tmp_path, "token.txt", "  secret-1  \nsecond line ignored\n")
    config = load("client", [], {"client.token-file": str(token_file)}, {"CONNET_CLIENT__TOKEN": "env"})
    assert config.client is not None and config.client.token == "secret-1"


def test_environment_token_and_token_file_together_is_an_error(tmp_path: Path) -> None:
    message = load_error("client", [], env={"CONNET_CLIENT__TOKEN": "a", "CONNET_CLIENT__TOKEN_FILE": "f"})
    assert "CONNET_CLIENT__TOKEN_FILE" in message and "client.token-file" in message


def test_environment_values_keep_the_declared_type() -> None:
    env = {
        "CONNET_CLIENT__TOKEN": "007",
        "CONNET_LOG_LEVEL": "debug",
        "CONNET_SERVER__TOKENS": '["007", "true", "1.5"]',
    }
    config = load("client", [], env=env)
    assert config.client is not None and config.client.token == "007"
    assert config.common.log_level == "debug"


def test_environment_array_is_a_toml_array(tmp_path: Path) -> None:
    env = {
        "CONNET_SERVER__CERT_FILE": "c.pem",
        "CONNET_SERVER__KEY_FILE": "k.pem",
        "CONNET_SERVER__TOKENS": '["007", "b"]',
        "CONNET_SERVER__IP_RESTRICTION__ALLOW_CIDRS": '["10.0.0.0/8"]',
    }
    config = load("server", [], env=env)
    assert config.server is not None
    assert config.common.plugins["tokens"]["tokens"] == ("007", "b")
    assert config.common.plugins["cidr"]["ip-restriction"]["allow-cidrs"] == (ipaddress.ip_network("10.0.0.0/8"),)
    message = load_error("server", [], env={**env, "CONNET_SERVER__TOKENS": "a,b"})
    assert message.startswith("CONNET_SERVER__TOKENS: server.tokens:") and "TOML array" in message


@pytest.mark.parametrize(
    ("variable", "fragment"),
    [
        ("CONNET_CLIENT__DESTINATIONS__WEB__ADDR", "cannot be set from the environment"),
        ("CONNET_SERVER__TOKEN_RESTRICTION", "cannot be set from the environment"),
        ("CONNET_CLIENT__SERVER_ADRESS", "unknown key"),
        ("CONNET_CLIENT", "is a table"),
        ("CONNET_LOG_LEVELS", "unknown key"),
    ],
)
def test_environment_refusals_name_the_variable(variable: str, fragment: str) -> None:
    message = load_error("client", [], env={variable: "x", "CONNET_CLIENT__TOKEN": "t"} if variable != "CONNET_CLIENT" else {variable: "x"})
    assert message.startswith(f"{variable}: ") and fragment in message


def test_paths_resolve_against_the_file_or_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "conf", "c.toml", '[client]\ntoken = "t"\nserver-cas = "certs/ca.pem"\n')
    config = load("client", [path])
    assert config.client is not None and config.client.server_cas == tmp_path / "conf" / "certs" / "ca.pem"
    monkeypatch.chdir(tmp_path)
    config = load("client", [path], env={"CONNET_CLIENT__SERVER_CAS": "env/ca.pem"})
    assert config.client is not None and config.client.server_cas == tmp_path / "env" / "ca.pem"


def test_string_values_are_not_interpreted(tmp_path: Path) -> None:
    # a full Dynaconf object would turn "@del" into a deletion marker
    path = write(tmp_path, "c.toml", '[client]\ntoken = "@del"\n')
    config = load("client", [path])
    assert config.client is not None and config.client.token == "@del"


def test_dynaconf_environment_variables_do_not_leak_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = write(tmp_path, "broken.toml", "x = = 1\n")
    monkeypatch.setenv("SETTINGS_FILE_FOR_DYNACONF", str(broken))
    monkeypatch.setenv("DYNACONF_LOG_LEVEL", "error")
    config = load("client", [write(tmp_path, "c.toml", '[client]\ntoken = "t"\n')])
    assert config.common.log_level == "info"


def test_any_file_name_is_read_as_toml(tmp_path: Path) -> None:
    config = load("client", [write(tmp_path, "client.conf", '[client]\ntoken = "t.toml"\n')])
    assert config.client is not None and config.client.token == "t.toml"


def test_keys_are_case_sensitive_in_files(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'LOG-LEVEL = "debug"\n[client]\ntoken = "t"\n')
    assert "LOG-LEVEL: unknown key" in load_error("client", [path])


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]:19190", HostPort("::1", 19190)),
        ("[2001:db8::1]:443", HostPort("2001:db8::1", 443)),
        ("127.0.0.1:0", HostPort("127.0.0.1", 0)),
        ("example.net:1", HostPort("example.net", 1)),
    ],
)
def test_addresses(text: str, expected: HostPort, tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", f'[client]\ntoken = "t"\nstatus-addr = "{text}"\nserver-addr = "{text}"\n')
    if expected.port == 0:
        assert "port 0" in load_error("client", [path])
        return
    config = load("client", [path])
    assert config.client is not None
    assert config.client.status_addr == expected and config.client.server_addr == expected
    assert config.client.server_name == expected.host


@pytest.mark.parametrize("text", ["::1:19190", "localhost", "host:port", "[::1]", "[zz::1]:1", "host:70000", ":0"])
def test_bad_dial_addresses(text: str, tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", f'[client]\ntoken = "t"\nserver-addr = "{text}"\n')
    message = load_error("client", [path])
    assert message.startswith(f"{path}: client.server-addr: ")


def test_a_dialed_address_without_host_means_this_machine(tmp_path: Path) -> None:
    """As in the original connet (issue 18): ":3000" dials localhost, and listens everywhere."""
    path = write(tmp_path, "c.toml", '[client]\ntoken = "t"\nserver-addr = ":19190"\n'
                 '[client.destinations.a]\naddr = ":3000"\n[client.sources.a]\naddr = ":8000"\n')
    config = load("client", [path])
    assert config.client is not None
    assert config.client.server_addr == HostPort("localhost", 19190)
    assert config.client.server_name == "localhost"
    assert config.client.destinations[0].addr == HostPort("localhost", 3000)
    assert config.client.sources[0].addr == HostPort("", 8000)
    relay = write(tmp_path, "r.toml", '[relay]\ntoken = "r"\ncontrol-addr = ":19190"\n')
    assert load("relay", [relay]).relay.control_addr == HostPort("localhost", 19190)  # type: ignore[union-attr]


def test_listen_address_may_omit_the_host(tmp_path: Path) -> None:
    config = load("client", [], {"client.token": "t", "client.direct-addr": ":0"})
    assert config.client is not None and config.client.direct_addr == HostPort("", 0)


# --- validation -----------------------------------------------------------------------------


def test_origins_name_file_variable_and_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[client]\ntoken = "t"\nstatus-addr = "nope"\n')
    assert load_error("client", [path]).startswith(f"{path}: client.status-addr: ")
    message = load_error("client", [path], env={"CONNET_CLIENT__STATUS_ADDR": "nope"})
    assert message.startswith("CONNET_CLIENT__STATUS_ADDR: client.status-addr: ")
    message = load_error("client", [], {"client.token": "t", "client.destinations.web.addr": "nope"})
    assert message.startswith("flag --dst-addr: client.destinations.web.addr: ")


def test_per_token_rules_must_match_the_token_count(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.toml",
        '[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["a", "b"]\n[[server.token-ip-restriction]]\nallow-cidrs = []\n',
    )
    message = load_error("server", [path])
    assert "server.token-ip-restriction" in message and "1 per-token" in message and "2 token" in message


def test_both_kinds_of_per_token_rules_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.toml",
        '[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["a"]\n'
        "[[server.token-ip-restriction]]\n[[server.token-restriction]]\n",
    )
    assert "server.token-restriction: give token-ip-restriction or token-restriction" in load_error("server", [path])


def test_repeated_token_is_an_error_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, "s.toml", '[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["sekrit", "sekrit"]\n')
    message = load_error("server", [path])
    assert "server.tokens" in message and "sekrit" not in message


def test_control_has_no_relay_keys_and_server_no_relay_tokens(tmp_path: Path) -> None:
    control = write(tmp_path, "c.toml", '[control]\nrelay-addr = ":1"\n')
    assert "control.relay-addr: unknown key" in load_error("control", [control])
    server = write(tmp_path, "s.toml", '[server]\nrelay-tokens = ["r"]\n')
    assert "server.relay-tokens: unknown key" in load_error("server", [server])


def test_relay_rules_need_relay_tokens(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        '[control]\ncert-file = "c"\nkey-file = "k"\nclient-tokens = ["a"]\n[control.relay-ip-restriction]\nallow-cidrs = []\n',
    )
    assert "control.relay-ip-restriction: needs relay-tokens" in load_error("control", [path])


def test_missing_section_and_required_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", '[client]\ntoken = "t"\n')
    assert load_error("server", [path]) == f"{path}: server: no [server] section in these files"
    assert "client: token or token-file is required" in load_error("client", [])
    server = write(tmp_path, "s.toml", '[server]\ntokens = ["a"]\nkey-file = "k"\n')
    assert "server: cert-file is required" in load_error("server", [server])


def test_bogus_transport_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'transport = "carrier-pigeon"\n[client]\ntoken = "t"\n')
    message = load_error("client", [path])
    assert message.startswith(f"{path}: transport: ") and "carrier-pigeon" in message


def test_transport_names_come_from_the_plugins(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'transport = "carrier-pigeon"\n[client]\ntoken = "t"\n')
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        load_config("client", [path], environ={})


def test_token_file_problems(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.txt", "\n")
    message = load_error("client", [], {"client.token-file": str(empty)})
    assert message.startswith("flag --token-file: client.token-file: ") and "empty" in message
    message = load_error("client", [], {"client.token-file": str(tmp_path / "missing.txt")})
    assert "cannot read" in message


# --- check_files ----------------------------------------------------------------------------


def server_toml(directory: Path, certs: dict[str, Path], extra: str = "", key: Path | None = None) -> Path:
    return write(
        directory,
        "s.toml",
        f'[server]\ncert-file = "{certs["cert"]}"\nkey-file = "{key or certs["key"]}"\n{extra}',
    )


def test_check_files_accepts_a_good_server(tmp_path: Path, certs: dict[str, Path]) -> None:
    write(tmp_path, "tokens.txt", "# comment\n\na\nb\n")
    config = load("server", [server_toml(tmp_path, certs, 'tokens-file = "tokens.txt"\n')])
    check_files(config)


def test_check_files_counts_tokens_file_against_rules(tmp_path: Path, certs: dict[str, Path]) -> None:
    write(tmp_path, "tokens.txt", "a\nb\n")
    path = server_toml(tmp_path, certs, 'tokens-file = "tokens.txt"\n[[server.token-restriction]]\nrole-matches = "source"\n')
    config = load("server", [path])
    with pytest.raises(ConfigError) as info:
        check_files(config)
    assert str(info.value).startswith(f"{path}: server.token-restriction: 1 per-token")


def test_check_files_refuses_a_key_of_another_certificate(
    tmp_path: Path, certs: dict[str, Path], other_certs: dict[str, Path]
) -> None:
    path = server_toml(tmp_path, certs, 'tokens = ["a"]\n', key=other_certs["key"])
    with pytest.raises(ConfigError) as info:
        check_files(load("server", [path]))
    assert str(info.value).startswith(f"{path}: server: key-file")


def test_check_files_refuses_a_ca_file_that_is_not_pem(tmp_path: Path, certs: dict[str, Path]) -> None:
    config = load("client", [], {"client.token": "t", "client.server-cas": str(certs["key"])})
    with pytest.raises(ConfigError, match=r"^flag --server-cas: client.server-cas: .* no PEM certificate"):
        check_files(config)
    check_files(load("client", [], {"client.token": "t", "client.server-cas": str(certs["ca"])}))


# --- the real `connet check` ----------------------------------------------------------------


def run_connet(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNET_")}
    return subprocess.run(
        [sys.executable, "-m", "connet_core.cli", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


GOOD_SERVER = '[server]\ncert-file = "{cert}"\nkey-file = "{key}"\ntokens = ["a"]\n'
GOOD_CLIENT = '[client]\ntoken = "t"\n'

# (id, {file name: text}, extra args, environment, fragments the one error line must hold)
BROKEN = [
    ("unknown-key", {"c.toml": GOOD_CLIENT + 'server-adr = "h:1"\n'}, [], {}, ["c.toml", "client.server-adr", "unknown key"]),
    ("unknown-root-key", {"c.toml": 'log-lvl = "info"\n' + GOOD_CLIENT}, [], {}, ["c.toml", "log-lvl", "unknown key"]),
    ("unknown-section", {"c.toml": GOOD_CLIENT + "[clinet]\n"}, [], {}, ["c.toml", "clinet"]),
    ("wrong-type", {"c.toml": "[client]\ntoken = 7\n"}, [], {}, ["c.toml", "client.token", "expected a string"]),
    ("wrong-type-array", {"s.toml": GOOD_SERVER.replace('["a"]', '"a"')}, [], {}, ["s.toml", "server.tokens", "array"]),
    ("table-expected", {"c.toml": 'client = "x"\n'}, ["--as", "client"], {}, ["c.toml", "client", "table"]),
    (
        "bad-cidr",
        {"s.toml": GOOD_SERVER + '[server.ip-restriction]\nallow-cidrs = ["10.0.0.0/33"]\n'},
        [],
        {},
        ["s.toml", "server.ip-restriction.allow-cidrs", "10.0.0.0/33"],
    ),
    ("token-and-token-file", {"c.toml": GOOD_CLIENT + 'token-file = "t.txt"\n'}, [], {}, ["c.toml", "client.token-file"]),
    (
        "token-file-from-another-file",
        {"a.toml": GOOD_CLIENT, "b.toml": '[client]\ntoken-file = "t.txt"\n'},
        ["--config", "b.toml"],
        {},
        ["a.toml", "b.toml", "client.token-file"],
    ),
    ("missing-token", {"c.toml": "[client]\n"}, [], {}, ["c.toml", "client", "token"]),
    ("missing-cert-file", {"s.toml": GOOD_SERVER.replace("{cert}", "nowhere.pem")}, [], {}, ["s.toml", "server.cert-file", "nowhere.pem"]),
    ("key-of-another-cert", {"s.toml": GOOD_SERVER.replace("{key}", "{other_key}")}, [], {}, ["s.toml", "key-file"]),
    ("bad-address", {"c.toml": GOOD_CLIENT + 'server-addr = "foo"\n'}, [], {}, ["c.toml", "client.server-addr", "'foo'"]),
    ("ipv6-without-brackets", {"c.toml": GOOD_CLIENT + 'server-addr = "::1:19190"\n'}, [], {}, ["c.toml", "client.server-addr"]),
    ("bad-port", {"c.toml": GOOD_CLIENT + 'status-addr = "127.0.0.1:99999"\n'}, [], {}, ["c.toml", "client.status-addr", "99999"]),
    (
        "per-token-count",
        {"s.toml": GOOD_SERVER + "[[server.token-ip-restriction]]\n[[server.token-ip-restriction]]\n"},
        [],
        {},
        ["s.toml", "server.token-ip-restriction", "2 per-token"],
    ),
    (
        "per-token-count-tokens-file",
        {
            "s.toml": GOOD_SERVER.replace('tokens = ["a"]', 'tokens-file = "tokens.txt"')
            + "[[server.token-restriction]]\n",
            "tokens.txt": "a\nb\n",
        },
        [],
        {},
        ["s.toml", "server.token-restriction", "tokens.txt"],
    ),
    ("bad-log-level", {"c.toml": 'log-level = "loud"\n' + GOOD_CLIENT}, [], {}, ["c.toml", "log-level", "'loud'"]),
    ("bad-log-format", {"c.toml": 'log-format = "xml"\n' + GOOD_CLIENT}, [], {}, ["c.toml", "log-format", "'xml'"]),
    ("not-toml", {"c.toml": "this is = not = toml\n"}, [], {}, ["c.toml", "not valid TOML"]),
    ("not-utf8", {"c.toml": "token = '\udcff'\n"}, [], {}, ["c.toml", "TOML"]),
    ("missing-config-file", {}, ["--config", "absent.toml"], {}, ["absent.toml"]),
    (
        "bad-route",
        {"c.toml": GOOD_CLIENT + '[client.destinations.web]\naddr = "h:1"\nroute = "fast"\n'},
        [],
        {},
        ["c.toml", "client.destinations.web.route", "'fast'"],
    ),
    (
        "destination-without-addr",
        {"c.toml": GOOD_CLIENT + "[client.destinations.web]\n"},
        [],
        {},
        ["c.toml", "client.destinations.web.addr", "required"],
    ),
    (
        "bad-role",
        {"s.toml": GOOD_SERVER + '[[server.token-restriction]]\nrole-matches = "both"\n'},
        [],
        {},
        ["s.toml", "server.token-restriction[1].role-matches", "'both'"],
    ),
    (
        "bad-regex",
        {"s.toml": GOOD_SERVER + '[[server.token-restriction]]\nname-matches = "web(["\n'},
        [],
        {},
        ["s.toml", "server.token-restriction[1].name-matches", "regular expression"],
    ),
    ("control-has-no-relay-addr", {"c.toml": '[control]\nrelay-addr = ":1"\n'}, [], {}, ["c.toml", "control.relay-addr"]),
    ("server-has-no-relay-tokens", {"s.toml": GOOD_SERVER + 'relay-tokens = ["r"]\n'}, [], {}, ["s.toml", "server.relay-tokens"]),
    ("unknown-transport", {"c.toml": 'transport = "pigeon"\n' + GOOD_CLIENT}, [], {}, ["c.toml", "transport", "pigeon"]),
    ("unknown-plugin", {"c.toml": 'disable-plugins = ["nope"]\n' + GOOD_CLIENT}, [], {}, ["c.toml", "disable-plugins", "nope"]),
    (
        "env-bad-address",
        {"c.toml": GOOD_CLIENT},
        [],
        {"CONNET_CLIENT__SERVER_ADDR": "foo"},
        ["CONNET_CLIENT__SERVER_ADDR", "client.server-addr"],
    ),
    ("env-unknown-key", {"c.toml": GOOD_CLIENT}, [], {"CONNET_CLIENT__NOPE": "1"}, ["CONNET_CLIENT__NOPE", "client.nope"]),
    ("flag-bad-log-level", {"c.toml": GOOD_CLIENT}, ["--log-level", "loud"], {}, ["flag --log-level", "log-level"]),
    ("empty-token-file", {"c.toml": '[client]\ntoken-file = "t.txt"\n', "t.txt": "\n"}, [], {}, ["c.toml", "client.token-file", "empty"]),
    ("server-cas-not-pem", {"c.toml": GOOD_CLIENT + 'server-cas = "c.toml"\n'}, [], {}, ["c.toml", "client.server-cas"]),
    ("nothing-to-check", {"c.toml": 'log-level = "info"\n'}, [], {}, ["--as"]),
]


@pytest.mark.parametrize(("files", "args", "env", "fragments"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_connet_check_refuses_broken_configs(
    files: dict[str, str],
    args: list[str],
    env: dict[str, str],
    fragments: list[str],
    tmp_path: Path,
    certs: dict[str, Path],
    other_certs: dict[str, Path],
) -> None:
    for name, text in files.items():
        text = text.replace("{cert}", str(certs["cert"])).replace("{key}", str(certs["key"]))
        text = text.replace("{other_key}", str(other_certs["key"]))
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    first = [name for name in files if name.endswith(".toml")][:1]
    config_args = [arg for name in first for arg in ("--config", name)]
    result = run_connet("check", *config_args, *args, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("connet: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


@pytest.fixture(scope="module")
def examples_with_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES, directory)
    result = run_connet("cert", "--out", str(directory / "certs"), cwd=directory)
    assert result.returncode == 0, result.stderr
    return directory


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_connet_check_passes_on_every_example(example: str, examples_with_certs: Path) -> None:
    result = run_connet("check", "--config", str(examples_with_certs / example), cwd=examples_with_certs.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    assert result.stderr == ""


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.toml")}
    assert {"client-destination.toml", "client-source.toml", "server.toml", "control.toml", "relay.toml"} <= names
    for name in names:
        assert (EXAMPLES / name).read_text().startswith("#"), f"{name} lacks its how-to-run header"


# --- files that are not small regular files; nesting and token-length limits ---------------

from connet_core import config_limits, files  # noqa: E402 - grouped with the tests below
from connet_core.protocol.framing import MAX_FRAME_SIZE, frame  # noqa: E402
from connet_core.protocol.messages import MAX_TOKEN_BYTES, Authenticate, RelayRegister  # noqa: E402


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_read_file_refuses_what_is_not_a_regular_file(tmp_path: Path, fifo: Path) -> None:
    import socket

    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        cases = {fifo: "a FIFO (named pipe)", Path("/dev/zero"): "a character device", tmp_path: "a directory",
                 sock_path: "a socket"}
        for path, what in cases.items():
            with pytest.raises(files.FileRefused) as info:
                files.read_file(path, "token")  # a FIFO without a writer: refused, not waited on
            assert str(info.value) == f"{path}: is {what}, not a regular file"
    with pytest.raises(files.FileRefused, match="cannot read it"):
        files.read_file(tmp_path / "missing", "pem")


def test_read_file_limits_per_kind(tmp_path: Path) -> None:
    exact = write(tmp_path, "exact", "x" * files.LIMITS["token"])
    assert files.read_file(exact, "token") == b"x" * files.LIMITS["token"]
    over = write(tmp_path, "over", "x" * (files.LIMITS["token"] + 1))
    with pytest.raises(files.FileRefused, match=r"is larger than 64 KiB \(65537 bytes\)"):
        files.read_file(over, "token")
    assert files.read_file(over, "tokens") == b"x" * (files.LIMITS["token"] + 1)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(files.FileRefused, match="is not UTF-8 text"):
        files.read_text(binary, "token")


@pytest.mark.parametrize("key", ["client.token-file", "client.server-cas"])
def test_client_file_keys_refuse_a_fifo_and_dev_zero(key: str, tmp_path: Path, fifo: Path) -> None:
    for bad, what in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        flags: dict[str, object] = {key: str(bad)}
        if key != "client.token-file":
            flags["client.token"] = "t"
        try:
            check_files(load("client", [], flags))
        except ConfigError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"{key} = {bad} accepted")
        assert "\n" not in message and key in message and str(bad) in message and what in message, message


def test_nesting_is_refused_before_anything_recurses(tmp_path: Path) -> None:
    deep = write(tmp_path, "deep.toml", '[client]\ntoken = "t"\nx = ' + "[" * 100_000 + "]" * 100_000 + "\n")
    assert load_error("client", [deep]) == f"{deep}: not accepted: line 3: nested deeper than 10 levels"
    tables = write(tmp_path, "tables.toml", '[client]\ntoken = "t"\nx = ' + "{a = " * 50_000 + "1" + "}" * 50_000)
    assert "nested deeper than 10 levels" in load_error("client", [tables])
    dotted = write(tmp_path, "dotted.toml", '[client]\ntoken = "t"\n' + "a." * 5_000 + "a = 1\n")
    assert "a dotted key of more than 10 parts" in load_error("client", [dotted])
    header = write(tmp_path, "header.toml", '[client]\ntoken = "t"\n[' + "a." * 5_000 + "a]\n")
    assert "a dotted key of more than 10 parts" in load_error("client", [header])
    message = load_error("server", [], env={"CONNET_SERVER__TOKENS": "[" * 50_000 + "]" * 50_000})
    assert message.startswith("CONNET_SERVER__TOKENS: server.tokens: expected a flat TOML array")


def test_the_nesting_scan_skips_strings_and_comments(tmp_path: Path) -> None:
    brackets = "[[[[[[[[[[[[{{{{{{{{{{{{ a.b.c.d.e.f.g.h.i.j.k.l"
    text = (
        f'[client] # {brackets}\ntoken = "{brackets}"\nserver-name = \'{brackets}\'\n'
        f'[client.destinations."{brackets}"]\naddr = """\n{brackets} \\""" """\n'
        f"[client.sources.'{brackets}']\naddr = '''{brackets}'''\nroute = \"\"\n"
    )
    config_limits.check_toml_text(text)  # nothing is nested: no error
    config_limits.check_toml_text("a.b.c = [1.5, 2.5, {x = 1979-05-27T07:32:00.999}]\n")
    for depth in (10, 11):
        text = "x = " + "[" * depth + "]" * depth + "\n"
        if depth <= config_limits.MAX_CONFIG_DEPTH:
            config_limits.check_toml_text(text)
        else:
            with pytest.raises(config_limits.TooDeep):
                config_limits.check_toml_text(text)


def test_a_token_longer_than_the_authenticate_frame_is_refused(tmp_path: Path) -> None:
    longest = "x" * MAX_TOKEN_BYTES
    # the longest accepted token does fit both messages that carry one
    assert len(frame(Authenticate(token=longest, reconnect_id=b"r" * 32, client_version="1.0.0"))) <= MAX_FRAME_SIZE + 4
    assert len(frame(RelayRegister(token=longest, hostname="h" * 253, port=65535, certificate=b"c" * 2048))) <= MAX_FRAME_SIZE + 4
    assert load("client", [], {"client.token": longest}).client.token == longest  # type: ignore[union-attr]
    too_long = "x" * (70 * 1024)
    message = load_error("client", [], {"client.token": too_long})
    assert message == (f"flag --token: client.token: the token is {70 * 1024} bytes long; the longest that fits "
                       f"the protocol's Authenticate message is {MAX_TOKEN_BYTES}")
    assert too_long not in message
    token_file = write(tmp_path, "token.txt", "y" * (MAX_TOKEN_BYTES + 1) + "\n")
    message = load_error("client", [], {"client.token-file": str(token_file)})
    assert f"client.token-file: {token_file}: the token is {MAX_TOKEN_BYTES + 1} bytes long" in message
    relay = write(tmp_path, "r.toml", f'[relay]\ntoken = "{too_long}"\n')
    assert "relay.token: the token is" in load_error("relay", [relay])
    server = write(tmp_path, "s.toml", f'[server]\ncert-file = "c"\nkey-file = "k"\ntokens = ["a", "{too_long}"]\n')
    assert "server.tokens: item 2: the token is" in load_error("server", [server])


def test_port_mapping_defaults_on_and_every_layer_can_turn_it_off(tmp_path: Path) -> None:
    on = write(tmp_path, "on.toml", '[client]\ntoken = "t"\n')
    off = write(tmp_path, "off.toml", '[client]\ntoken = "t"\nport-mapping = false\n')
    assert load("client", [on]).client.port_mapping is True  # type: ignore[union-attr]
    assert load("client", [off]).client.port_mapping is False  # type: ignore[union-attr]
    assert load("client", [on], env={"CONNET_CLIENT__PORT_MAPPING": "false"}).client.port_mapping is False  # type: ignore[union-attr]
    assert load("client", [off], env={"CONNET_CLIENT__PORT_MAPPING": "True"}).client.port_mapping is True  # type: ignore[union-attr]
    config = load("client", [off], {"client.port-mapping": True}, {"CONNET_CLIENT__PORT_MAPPING": "false"})
    assert config.client.port_mapping is True  # type: ignore[union-attr]
    assert config.sources["client.port-mapping"] == "flag --port-mapping"


@pytest.mark.parametrize(("text", "env", "shown"), [
    ('port-mapping = "maybe"', {}, "'maybe'"),
    ("port-mapping = 1", {}, "an integer"),
    ("", {"CONNET_CLIENT__PORT_MAPPING": "yes please"}, "'yes please'"),
])
def test_port_mapping_takes_only_true_or_false(tmp_path: Path, text: str, env: dict[str, str], shown: str) -> None:
    path = write(tmp_path, "c.toml", f'[client]\ntoken = "t"\n{text}\n')
    message = load_error("client", [path], env=env)
    assert "client.port-mapping: expected true or false, got " + shown in message

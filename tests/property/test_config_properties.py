"""Properties of configuration parsing: HostPort round-trips, and environment values keep
the key's declared type whatever they look like."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connet_core.config import load_config
from connet_core.model import HostPort

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TRANSPORTS = ("auto", "aioquic")

ports = st.integers(min_value=0, max_value=65535)
ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(str)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
hosts = st.one_of(ipv4_hosts, ipv6_hosts, names, st.just(""))

# what an environment variable can hold, and a token must be: no NUL, not only white space
env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1).filter(
    lambda s: s.strip() != ""
)


@SETTINGS
@given(hosts, ports)
def test_hostport_format_parse_round_trip(host: str, port: int) -> None:
    addr = HostPort(host, port)
    assert HostPort.parse(str(addr)) == addr


@SETTINGS
@given(ipv6_hosts, ports)
def test_ipv6_needs_brackets(host: str, port: int) -> None:
    text = str(HostPort(host, port))
    assert text.startswith("[")
    try:
        parsed = HostPort.parse(f"{host}:{port}")
    except ValueError:
        return
    # only an address with a single colon could be read without brackets: none exists
    raise AssertionError(f"{host}:{port} parsed as {parsed}")


@SETTINGS
@given(st.ip_addresses(v=4), ports)
def test_ipv4_mapped_normalizes_to_ipv4(address: ipaddress.IPv4Address, port: int) -> None:
    mapped = HostPort.parse(f"[::ffff:{address}]:{port}")
    assert mapped.normalized() == HostPort(str(address), port)


@SETTINGS
@given(env_text, st.lists(st.booleans(), min_size=len("CONNET_CLIENT__TOKEN"), max_size=len("CONNET_CLIENT__TOKEN")))
def test_environment_token_stays_the_exact_string(token: str, upper: list[bool]) -> None:
    name = "".join(c.upper() if u else c.lower() for c, u in zip("CONNET_CLIENT__TOKEN", upper))
    config = load_config("client", [], {}, {name: token}, transport_names=TRANSPORTS)
    assert config.client is not None
    assert config.client.token == token
    assert config.sources["client.token"] == name


@SETTINGS
@given(st.one_of(st.from_regex(r"[0-9]{1,12}", fullmatch=True), st.sampled_from(["true", "1.5", "1e3", "[1]", "{a=1}", '"q"'])))
def test_toml_looking_tokens_are_not_converted(token: str) -> None:
    config = load_config("client", [], {}, {"CONNET_CLIENT__TOKEN": token}, transport_names=TRANSPORTS)
    assert config.client is not None and config.client.token == token


def toml_string(text: str) -> str:
    """A TOML basic string: escape the quote, the backslash and control characters."""
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c for c in text
    )
    return f'"{escaped}"'


@SETTINGS
@given(st.lists(env_text, min_size=1, max_size=5, unique=True))
def test_environment_array_round_trips(tokens: list[str]) -> None:
    array = "[" + ", ".join(toml_string(t) for t in tokens) + "]"
    env = {"CONNET_SERVER__TOKENS": array, "CONNET_SERVER__CERT_FILE": "c.pem", "CONNET_SERVER__KEY_FILE": "k.pem"}
    config = load_config("server", [], {}, env, transport_names=TRANSPORTS)
    assert config.server is not None
    assert config.common.plugins["tokens"]["tokens"] == tuple(tokens)


@SETTINGS
@given(hosts.filter(bool), ports.filter(bool))
def test_environment_address_parses_like_hostport(host: str, port: int) -> None:
    text = str(HostPort(host, port))
    env = {"CONNET_CLIENT__TOKEN": "t", "CONNET_CLIENT__SERVER_ADDR": text}
    config = load_config("client", [], {}, env, transport_names=TRANSPORTS)
    assert config.client is not None
    assert config.client.server_addr == HostPort(host, port)
    assert config.client.server_name == host


# --- the nesting scan never refuses a shallow document ------------------------------------

import tomllib  # noqa: E402

from dynaconf.vendor.tomllib import dumps as toml_dumps  # noqa: E402

from connet_core.config_limits import check_toml_text  # noqa: E402

# text full of what the scan looks at: quotes, brackets, braces, '#', '.', '=', ',', newlines
tricky_text = st.lists(st.sampled_from([*"ab .#[]{}=,\"'\\\n\t\u00e9", "'''", '"""']), max_size=20).map("".join)
keys = st.one_of(labels, tricky_text.filter(bool))
scalars = st.one_of(tricky_text, st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans())
shallow_values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                              | st.dictionaries(keys, children, max_size=3), max_leaves=12)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, shallow_values, max_size=4), st.booleans())
def test_the_nesting_scan_accepts_every_shallow_document(document: dict, multiline: bool) -> None:
    """Whatever strings and keys hold, a document nested no deeper than 5 passes the scan:
    the scan skips strings and comments exactly as the parser reads them."""
    if _depth(document) > 5:
        return
    text = toml_dumps(document, multiline_strings=multiline)
    assert tomllib.loads(text) == document  # the writer's output is the document
    check_toml_text(text)

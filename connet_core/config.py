"""Configuration: files (``--config``, repeatable), ``CONNET_*`` environment and flags,
layered as SPEC.md says, validated into the frozen dataclasses below.

How the layers are read (DESIGN.md lists the dynaconf pitfalls this avoids):

- Each file is read by dynaconf's TOML loader alone (``BaseLoader.get_source_data``), one file
  at a time. A full ``Dynaconf`` settings object is *not* used: it upper-cases top-level keys,
  replaces whole tables across files, interprets string values (a token ``"@del"`` becomes a
  deletion marker) and honours ``dynaconf_merge``/dotted keys, all of which change user data.
- The files are deep-merged here: tables key by key, later file wins per key, arrays replaced
  whole. ``token`` from one file with ``token-file`` from another is an error.
- ``CONNET_*`` variables are read raw and converted by the key's declared type (a token
  ``007`` stays the string "007"; an array is a TOML array).
- Flags come last. A token group (``token``/``token-file``, ``tokens``/``tokens-file``, ...)
  set by a higher layer replaces the whole group of the lower layers.
- The merged tree is validated against :data:`SCHEMA`; every key keeps the origin (file path,
  variable name or ``flag --name``) so each error is one line naming the key and its origin.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable, Mapping, Sequence, Union

from connet_core.config_limits import TooDeep, check_depth, check_toml_text, token_problem
from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file
from connet_core.model import HostPort, Role, RoutePolicy
from connet_core.token_files import read_token_file, read_tokens_file

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CommonSettings:
    log_level: str = "info"  # debug | info | warn | error
    log_format: str = "text"  # text | json
    transport: str = "auto"  # the quic plugin: qh3 when it imports, else aioquic
    disable_plugins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Tokens given inline, or a file read (and re-read on change) by the tokens plugin."""

    tokens: tuple[str, ...] | None = None
    file: Path | None = None


@dataclass(frozen=True, slots=True)
class CidrRule:
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenRule:
    """Per-token restriction, matched to tokens by position."""

    cidr: CidrRule = CidrRule()
    name_matches: str | None = None  # a regular expression that must match the whole name
    role_matches: Role | None = None


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What the authentication hooks get: one set per kind of principal."""

    tokens: TokenSource
    ip_restriction: CidrRule = CidrRule()
    token_rules: tuple[TokenRule, ...] | None = None  # None: no per-token rules


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    """A destination or a source."""

    name: str
    role: Role
    addr: HostPort
    route: RoutePolicy = RoutePolicy.ANY


@dataclass(frozen=True, slots=True)
class ClientSettings:
    token: str
    server_addr: HostPort = HostPort("localhost", 19190)
    server_cas: Path | None = None
    server_name: str = "localhost"
    direct_addr: HostPort = HostPort("", 19192)
    status_addr: HostPort | None = None
    destinations: tuple[EndpointSettings, ...] = ()
    sources: tuple[EndpointSettings, ...] = ()
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class ControlSettings:
    cert_file: Path
    key_file: Path
    client_auth: AuthSettings
    relay_auth: AuthSettings | None = None  # None: relays are not accepted
    addr: HostPort = HostPort("", 19190)
    status_addr: HostPort | None = None
    store_dir: Path | None = None  # None: a new temp directory per run
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class RelaySettings:
    token: str
    addr: HostPort = HostPort("", 19191)
    hostname: str = "localhost"
    control_addr: HostPort = HostPort("localhost", 19190)
    control_cas: Path | None = None
    control_name: str = "localhost"
    status_addr: HostPort | None = None
    store_dir: Path | None = None
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Control and relay in one process (``connet server``); the relay is built in."""

    control: ControlSettings
    relay_addr: HostPort = HostPort("", 19191)
    relay_hostname: str = "localhost"
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class Config:
    """What ``load_config`` returns: the common keys and the section for the command."""

    command: str  # "client" | "server" | "control" | "relay"
    common: CommonSettings = CommonSettings()
    client: ClientSettings | None = None
    server: ServerSettings | None = None
    control: ControlSettings | None = None
    relay: RelaySettings | None = None
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> where it came from


COMMANDS = ("client", "server", "control", "relay")
ENV_PREFIX = "CONNET_"
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("text", "json")


# --- schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A key holding a value. ``kind`` names its converter; ``choices`` for enums."""

    kind: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Named:
    """``[parent.NAME]`` tables: any name, each table shaped by ``schema``."""

    schema: dict[str, "_Spec"]


@dataclass(frozen=True, slots=True)
class _Array:
    """``[[parent]]`` array of tables, each shaped by ``schema``; replaced whole when layered."""

    schema: dict[str, "_Spec"]


_Spec = Union[_Leaf, _Named, _Array, dict]

_ROUTES = tuple(p.value for p in RoutePolicy)
_ROLES = tuple(r.value for r in Role)
_CIDR_RULE: dict[str, _Spec] = {"allow-cidrs": _Leaf("cidrs"), "deny-cidrs": _Leaf("cidrs")}
_TOKEN_RULE: dict[str, _Spec] = {
    **_CIDR_RULE,
    "name-matches": _Leaf("regex"),
    "role-matches": _Leaf("enum", _ROLES),
}

SCHEMA: dict[str, _Spec] = {
    "log-level": _Leaf("enum", LOG_LEVELS),
    "log-format": _Leaf("enum", LOG_FORMATS),
    "transport": _Leaf("text"),
    "disable-plugins": _Leaf("strings"),
    "client": {
        "token": _Leaf("text"),
        "token-file": _Leaf("path"),
        "server-addr": _Leaf("dial"),
        "server-cas": _Leaf("path"),
        "server-name": _Leaf("host"),
        "direct-addr": _Leaf("listen"),
        "status-addr": _Leaf("listen"),
        "destinations": _Named({"addr": _Leaf("dial"), "route": _Leaf("enum", _ROUTES)}),
        "sources": _Named({"addr": _Leaf("listen"), "route": _Leaf("enum", _ROUTES)}),
    },
    "server": {
        "addr": _Leaf("listen"),
        "cert-file": _Leaf("path"),
        "key-file": _Leaf("path"),
        "tokens": _Leaf("strings"),
        "tokens-file": _Leaf("path"),
        "relay-addr": _Leaf("listen"),
        "relay-hostname": _Leaf("host"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
        "ip-restriction": dict(_CIDR_RULE),
        "token-ip-restriction": _Array(_CIDR_RULE),
        "token-restriction": _Array(_TOKEN_RULE),
    },
    "control": {
        "addr": _Leaf("listen"),
        "cert-file": _Leaf("path"),
        "key-file": _Leaf("path"),
        "client-tokens": _Leaf("strings"),
        "client-tokens-file": _Leaf("path"),
        "relay-tokens": _Leaf("strings"),
        "relay-tokens-file": _Leaf("path"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
        "client-ip-restriction": dict(_CIDR_RULE),
        "client-token-ip-restriction": _Array(_CIDR_RULE),
        "client-token-restriction": _Array(_TOKEN_RULE),
        "relay-ip-restriction": dict(_CIDR_RULE),
        "relay-token-ip-restriction": _Array(_CIDR_RULE),
    },
    "relay": {
        "token": _Leaf("text"),
        "token-file": _Leaf("path"),
        "addr": _Leaf("listen"),
        "hostname": _Leaf("host"),
        "control-addr": _Leaf("dial"),
        "control-cas": _Leaf("path"),
        "control-name": _Leaf("host"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
    },
}

# Keys that say the same thing two ways: exactly one may be given, and a higher layer that
# sets either replaces both from the lower layers (SPEC.md: "a token given by flag or
# environment replaces both token and token-file from files").
TOKEN_GROUPS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("client", ("token", "token-file")),
    ("relay", ("token", "token-file")),
    ("server", ("tokens", "tokens-file")),
    ("control", ("client-tokens", "client-tokens-file")),
    ("control", ("relay-tokens", "relay-tokens-file")),
)

_LIST_KINDS = ("strings", "cidrs")

# unknown keys that are known elsewhere: say where they belong instead of guessing a spelling
_MISPLACED: dict[str, str] = {
    "server.relay-tokens": "[server] has its relay built in and takes no relay tokens",
    "server.relay-tokens-file": "[server] has its relay built in and takes no relay tokens",
    "server.client-tokens": "in [server] the client tokens are called tokens",
    "server.client-tokens-file": "in [server] the client tokens file is called tokens-file",
    "control.tokens": "in [control] the client tokens are called client-tokens",
    "control.tokens-file": "in [control] the client tokens file is called client-tokens-file",
    "control.relay-addr": "[control] has no relay: use [server], or run connet relay",
    "control.relay-hostname": "[control] has no relay: use [server], or run connet relay",
    "control.ip-restriction": "in [control] it is client-ip-restriction or relay-ip-restriction",
    "control.token-ip-restriction": "in [control] it is client-token-ip-restriction or relay-token-ip-restriction",
    "control.token-restriction": "in [control] it is client-token-restriction",
}


# --- layered values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    """A leaf value with where it came from; ``base_dir`` resolves relative paths."""

    value: object
    origin: str
    base_dir: Path


class _Table(dict):
    """A table of the layered tree; ``origin`` is where it was (last) defined."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin


class _Invalid(ValueError):
    """A value failed its converter; the message is the reason, without key or origin."""


def _dotted(path: Sequence[str]) -> str:
    return ".".join(path)


def _to_tree(raw: Mapping[str, object], origin: str, base_dir: Path) -> _Table:
    """Wrap a parsed TOML mapping: tables stay tables (merged key by key), everything else,
    arrays of tables included, becomes a leaf (replaced whole)."""
    table = _Table(origin)
    for key, value in raw.items():
        if isinstance(value, Mapping):
            table[key] = _to_tree(value, origin, base_dir)
        else:
            table[key] = _Value(value, origin, base_dir)
    return table


def _deep_merge(base: _Table, top: _Table) -> _Table:
    """``top`` over ``base``: tables key by key, anything else replaced whole."""
    merged = _Table(top.origin if top else base.origin)
    merged.update(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(old, _Table) and isinstance(value, _Table):
            merged[key] = _deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _group_members(tree: _Table, section: str, members: tuple[str, str]) -> list[str]:
    table = tree.get(section)
    if not isinstance(table, _Table):
        return []
    return [m for m in members if m in table]


def _drop_groups_set_by(base: _Table, top: _Table) -> _Table:
    """Remove from ``base`` every token group ``top`` sets any member of."""
    result = _deep_merge(_Table(base.origin), base)  # a copy: layers are not mutated
    for section, members in TOKEN_GROUPS:
        if _group_members(top, section, members) and isinstance(result.get(section), _Table):
            table = _deep_merge(_Table(result[section].origin), result[section])
            for member in members:
                table.pop(member, None)
            result[section] = table
    return result


def _merge_files(trees: Sequence[_Table]) -> _Table:
    merged = _Table("")
    for tree in trees:
        for section, members in TOKEN_GROUPS:
            old = _group_members(merged, section, members)
            new = _group_members(tree, section, members)
            for key in new:
                for other in old:
                    if other != key:
                        raise ConfigError(
                            f"{tree[section][key].origin}: {section}.{key}: conflicts with "
                            f"{section}.{other} from {merged[section][other].origin}: give one of them"
                        )
        merged = _deep_merge(merged, tree)
    return merged


# --- reading the layers ---------------------------------------------------------------------


class _LoaderHost:
    """The part of a dynaconf settings object that ``BaseLoader.get_source_data`` touches.

    A real ``Dynaconf`` object, once set up, also reads ``SETTINGS_FILE_FOR_DYNACONF`` and the
    other ``*_FOR_DYNACONF`` variables and loads the files they name: a stray variable in the
    user's environment would then break (or change) our configuration."""

    def __init__(self) -> None:
        self.__core__ = SimpleNamespace(config=SimpleNamespace(loaded_files=[]))


def read_config_file(path: Path) -> dict[str, object]:
    """The raw mapping of one TOML file, read by dynaconf's TOML loader (nothing else of
    dynaconf applies: see the module docstring). Raises ConfigError naming the file."""
    from dynaconf.loaders.base import BaseLoader
    from dynaconf.vendor import tomllib as dynaconf_tomllib

    origin = str(path)
    # read here, safely (files.py: no FIFO, device or huge file), and hand dynaconf the text
    try:
        text = read_file(path, "config").decode("utf-8")
        check_toml_text(text)  # before the parser recurses
    except FileRefused as exc:
        raise ConfigError(f"{origin}: config file {exc.reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not valid TOML: the file is not UTF-8 text") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    loader = BaseLoader(
        obj=_LoaderHost(),
        env="_envless",
        identifier="toml",
        extensions=(),  # no source is a file name: the loader parses the text it is given
        file_reader=dynaconf_tomllib.load,
        string_reader=dynaconf_tomllib.loads,
        opener_params={"mode": "rb"},  # unused (no file source) but read from obj otherwise
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = dict(loader.get_source_data([text]).get(text, {}))
        check_depth(data)  # dotted keys nest too: before anything walks the tables
    except dynaconf_tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    return data


def _spec_at(path: Sequence[str]) -> _Spec | None:
    spec: _Spec = SCHEMA
    for part in path:
        if not isinstance(spec, dict) or part not in spec:
            return None
        spec = spec[part]
    return spec


def _env_layer(environ: Mapping[str, str], cwd: Path) -> _Table:
    tree = _Table("environment")
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        raw = environ[name]
        path = [part.lower().replace("_", "-") for part in name[len(ENV_PREFIX) :].split("__")]
        key = _dotted(path)
        spec: _Spec = SCHEMA
        for depth, part in enumerate(path):
            if not isinstance(spec, dict) or part not in spec:
                hint = f" ({_MISPLACED[key]})" if key in _MISPLACED else _suggest(part, spec)
                raise ConfigError(f"{name}: {key}: unknown key{hint}")
            spec = spec[part]
            if isinstance(spec, (_Named, _Array)):
                raise ConfigError(
                    f"{name}: {_dotted(path[: depth + 1])}: cannot be set from the environment; "
                    "write it in a config file"
                )
        if not isinstance(spec, _Leaf):
            raise ConfigError(f"{name}: {key}: is a table; set one of its keys, e.g. {name}__<KEY>")
        value: object = raw
        if spec.kind in _LIST_KINDS:
            try:
                check_toml_text(raw)
                value = tomllib.loads(f"value = {raw}")["value"]
                check_depth(value, 1)  # an array of strings
            except TooDeep:
                raise ConfigError(f"{name}: {key}: expected a flat TOML array such as [\"a\", \"b\"]") from None
            except tomllib.TOMLDecodeError:
                raise ConfigError(f'{name}: {key}: expected a TOML array such as ["a", "b"]') from None
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, _Table(name))
        node[path[-1]] = _Value(value, name, cwd)
    return tree


def flag_name(path: Sequence[str]) -> str:
    """The command-line flag that sets a key: ``--server-addr``, ``--dst-addr``, ..."""
    if len(path) == 4 and path[0] == "client" and path[1] in ("destinations", "sources"):
        return f"--{'dst' if path[1] == 'destinations' else 'src'}-{path[3]}"
    return f"--{path[-1]}"


def _split_flag_key(key: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(key, tuple):
        return key
    for named in ("client.destinations.", "client.sources."):
        if key.startswith(named):
            # the NAME may hold dots: the last part is the key, the rest the name
            name, _, leaf = key[len(named) :].rpartition(".")
            return ("client", named.split(".")[1], name, leaf)
    return tuple(key.split("."))


def _flag_layer(flags: Mapping[str | tuple[str, ...], object], cwd: Path) -> _Table:
    tree = _Table("flags")
    for key, value in flags.items():
        if value is None:
            continue
        path = _split_flag_key(key)
        origin = f"flag {flag_name(path)}"
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, _Table(origin))
        node[path[-1]] = _Value(list(value) if isinstance(value, tuple) else value, origin, cwd)
    return tree


# --- converters -----------------------------------------------------------------------------


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _host(value: object) -> str:
    text = _text(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if any(c.isspace() for c in text) or "/" in text:
        raise _Invalid(f"{value!r} is not a host name or address")
    if ":" in text:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise _Invalid(f"{value!r} is not a host name or address (no port here)") from None
    return text


def _listen(value: object) -> HostPort:
    try:
        return HostPort.parse(_text(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _dial(value: object) -> HostPort:
    addr = _listen(value)
    if not addr.host:
        raise _Invalid(f"{value!r} has no host (write host:port)")
    if addr.port == 0:
        raise _Invalid(f"{value!r}: port 0 cannot be dialed")
    return addr


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected an array of strings, got {_describe(value)}")
    for index, item in enumerate(value, 1):
        if not isinstance(item, str):
            raise _Invalid(f"item {index}: expected a string, got {_describe(item)}")
        if not item.strip():
            raise _Invalid(f"item {index}: must not be empty")
    return tuple(value)


def _cidrs(value: object) -> tuple[IPNetwork, ...]:
    networks = []
    for item in _strings(value):
        try:
            # like Go's net.ParseCIDR: host bits are masked, not refused
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise _Invalid(f"{item!r} is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)") from None
    return tuple(networks)


def _regex(value: object) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _Invalid(f"{text!r} is not a valid regular expression ({exc})") from None
    return text


_CONVERTERS: dict[str, Callable[[object], object]] = {
    "text": _text,
    "host": _host,
    "listen": _listen,
    "dial": _dial,
    "strings": _strings,
    "cidrs": _cidrs,
    "regex": _regex,
}


def _convert(leaf: _Leaf, value: _Value) -> object:
    raw = value.value
    if leaf.kind == "enum":
        if not isinstance(raw, str):
            raise _Invalid(f"expected one of {', '.join(leaf.choices)}, got {_describe(raw)}")
        if raw not in leaf.choices:
            raise _Invalid(f"{raw!r} is not one of {', '.join(leaf.choices)}")
        return raw
    if leaf.kind == "path":
        text = _text(raw)
        return value.base_dir / Path(text).expanduser()
    return _CONVERTERS[leaf.kind](raw)


def _suggest(key: str, spec: object) -> str:
    if not isinstance(spec, dict):
        return ""
    close = difflib.get_close_matches(key, list(spec), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --- validation of the merged tree ----------------------------------------------------------


def _validate_table(
    tree: _Table, schema: dict[str, _Spec], path: tuple[str, ...], origins: dict[str, str]
) -> dict[str, object]:
    """Check every key of ``tree`` against ``schema``; returns the converted values (tables
    as dicts, named tables as dicts by name, arrays of tables as lists of dicts)."""
    out: dict[str, object] = {}
    for key, node in tree.items():
        key_path = (*path, key)
        dotted = _dotted(key_path)
        if key not in schema:
            hint = f" ({_MISPLACED[dotted]})" if dotted in _MISPLACED else _suggest(key, schema)
            raise ConfigError(f"{node.origin}: {dotted}: unknown key{hint}")
        spec = schema[key]
        if isinstance(spec, dict):
            if not isinstance(node, _Table):
                raise ConfigError(f"{node.origin}: {dotted}: expected a table [{dotted}], got {_describe(node.value)}")
            out[key] = _validate_table(node, spec, key_path, origins)
        elif isinstance(spec, _Named):
            if not isinstance(node, _Table):
                raise ConfigError(
                    f"{node.origin}: {dotted}: expected tables [{dotted}.NAME], got {_describe(node.value)}"
                )
            named: dict[str, object] = {}
            for name, sub in node.items():
                if not isinstance(sub, _Table):
                    raise ConfigError(
                        f"{sub.origin}: {dotted}.{name}: expected a table [{dotted}.{name}], got {_describe(sub.value)}"
                    )
                if not name.strip():
                    raise ConfigError(f"{sub.origin}: {dotted}: a name must not be empty")
                origins.setdefault(f"{dotted}.{name}", sub.origin)
                named[name] = _validate_table(sub, spec.schema, (*key_path, name), origins)
            out[key] = named
        elif isinstance(spec, _Array):
            items = node.value if isinstance(node, _Value) else None
            if not isinstance(items, list) or not all(isinstance(item, Mapping) for item in items):
                got = "a table" if isinstance(node, _Table) else _describe(items)
                raise ConfigError(f"{node.origin}: {dotted}: expected an array of tables [[{dotted}]], got {got}")
            origins[dotted] = node.origin
            out[key] = [
                _validate_table(
                    _to_tree(item, node.origin, node.base_dir), spec.schema, (*path, f"{key}[{index}]"), origins
                )
                for index, item in enumerate(items, 1)
            ]
        else:
            if isinstance(node, _Table):
                raise ConfigError(f"{node.origin}: {dotted}: expected a value, got a table")
            try:
                out[key] = _convert(spec, node)
            except _Invalid as exc:
                raise ConfigError(f"{node.origin}: {dotted}: {exc}") from None
            origins[dotted] = node.origin
    return out


# --- building the settings ------------------------------------------------------------------


class _Section:
    """Converted values of one section with their origins, for the builders' checks."""

    def __init__(self, name: str, values: dict[str, object], origins: dict[str, str], where: str) -> None:
        self.name = name
        self.values = values
        self.origins = origins
        self.where = where  # the config files, for errors about keys that are missing

    def get(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    def origin(self, key: str) -> str:
        return self.origins.get(f"{self.name}.{key}", self.where)

    def error(self, key: str, problem: str) -> ConfigError:
        prefix = f"{self.origin(key)}: " if self.origin(key) else ""
        return ConfigError(f"{prefix}{self.name}.{key}: {problem}")

    def missing(self, problem: str) -> ConfigError:
        prefix = f"{self.where}: " if self.where else ""
        return ConfigError(f"{prefix}{self.name}: {problem}")


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper().replace('-', '_')}"


def _one_of(section: _Section, members: tuple[str, str], required: bool) -> str | None:
    """Which member of a token group is given; both is an error, none too if required."""
    given = [m for m in members if m in section.values]
    if len(given) == 2:
        raise ConfigError(
            f"{section.origin(members[1])}: {section.name}.{members[1]}: give {members[0]} or {members[1]}, not both"
            f" ({members[0]} from {section.origin(members[0])})"
        )
    if not given:
        if required:
            raise section.missing(
                f"{members[0]} or {members[1]} is required (in [{section.name}], "
                f"{_env_name(section.name, members[0])} or a flag)"
            )
        return None
    return given[0]


def _token(section: _Section) -> str:
    which = _one_of(section, ("token", "token-file"), required=True)
    if which == "token":
        token = str(section.get("token"))
        problem = token_problem(token)
        if problem is not None:
            raise section.error("token", problem)
        return token
    path = section.get("token-file")
    assert isinstance(path, Path)
    try:
        return read_token_file(path)
    except FileRefused as exc:
        raise section.error("token-file", str(exc)) from None
    except ValueError as exc:  # empty, or too long to send
        raise section.error("token-file", f"{path}: {exc}") from None


def _cidr_rule(values: object) -> CidrRule:
    if not isinstance(values, dict):
        return CidrRule()
    return CidrRule(allow=values.get("allow-cidrs", ()), deny=values.get("deny-cidrs", ()))  # type: ignore[arg-type]


def _token_rule(values: dict[str, object]) -> TokenRule:
    role = values.get("role-matches")
    return TokenRule(
        cidr=_cidr_rule(values),
        name_matches=values.get("name-matches"),  # type: ignore[arg-type]
        role_matches=Role(role) if isinstance(role, str) else None,
    )


def _auth(
    section: _Section,
    tokens_keys: tuple[str, str],
    ip_key: str,
    token_ip_key: str,
    token_rule_key: str | None,
    required: bool,
) -> AuthSettings | None:
    which = _one_of(section, tokens_keys, required)
    if which is None:
        for key in (ip_key, token_ip_key):
            if key in section.values:
                raise section.error(key, f"needs {tokens_keys[0]} or {tokens_keys[1]}")
        return None
    if which == tokens_keys[0]:
        tokens: tuple[str, ...] = section.get(which)  # type: ignore[assignment]
        seen: set[str] = set()
        for index, token in enumerate(tokens, 1):
            if token in seen:  # positional rules would be ambiguous; never echo the token
                raise section.error(which, f"item {index} repeats an earlier token")
            problem = token_problem(token)
            if problem is not None:
                raise section.error(which, f"item {index}: {problem}")
            seen.add(token)
        source = TokenSource(tokens=tokens)
    else:
        source = TokenSource(file=section.get(which))  # type: ignore[arg-type]
    rules: tuple[TokenRule, ...] | None = None
    if token_rule_key is not None and token_ip_key in section.values and token_rule_key in section.values:
        raise section.error(token_rule_key, f"give {token_ip_key} or {token_rule_key}, not both")
    for key in (token_ip_key, token_rule_key):
        if key is not None and key in section.values:
            rules = tuple(_token_rule(item) for item in section.get(key))  # type: ignore[union-attr]
            if source.tokens is not None and len(rules) != len(source.tokens):
                raise section.error(
                    key,
                    f"{len(rules)} per-token restriction(s) for {len(source.tokens)} token(s) in "
                    f"{section.name}.{tokens_keys[0]}: give one per token, in the same order",
                )
    return AuthSettings(tokens=source, ip_restriction=_cidr_rule(section.get(ip_key)), token_rules=rules)


def _cert_files(section: _Section) -> tuple[Path, Path]:
    for key in ("cert-file", "key-file"):
        if key not in section.values:
            raise section.missing(f"{key} is required (in [{section.name}] or {_env_name(section.name, key)})")
    return section.get("cert-file"), section.get("key-file")  # type: ignore[return-value]


def _build_client(section: _Section, common: CommonSettings) -> ClientSettings:
    server_addr: HostPort = section.get("server-addr", HostPort("localhost", 19190))  # type: ignore[assignment]
    endpoints: dict[Role, list[EndpointSettings]] = {Role.DESTINATION: [], Role.SOURCE: []}
    for key, role in (("destinations", Role.DESTINATION), ("sources", Role.SOURCE)):
        named: dict[str, dict[str, object]] = section.get(key, {})  # type: ignore[assignment]
        for name, values in named.items():
            if "addr" not in values:
                origin = section.origins.get(f"client.{key}.{name}", section.where)
                raise ConfigError(f"{origin}: client.{key}.{name}.addr: required")
            endpoints[role].append(
                EndpointSettings(
                    name=name,
                    role=role,
                    addr=values["addr"],  # type: ignore[arg-type]
                    route=RoutePolicy(values.get("route", "any")),
                )
            )
    return ClientSettings(
        token=_token(section),
        server_addr=server_addr,
        server_cas=section.get("server-cas"),  # type: ignore[arg-type]
        server_name=section.get("server-name", server_addr.host),  # type: ignore[arg-type]
        direct_addr=section.get("direct-addr", HostPort("", 19192)),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        destinations=tuple(endpoints[Role.DESTINATION]),
        sources=tuple(endpoints[Role.SOURCE]),
        common=common,
    )


def _build_server(section: _Section, common: CommonSettings) -> ServerSettings:
    cert_file, key_file = _cert_files(section)
    client_auth = _auth(section, ("tokens", "tokens-file"), "ip-restriction", "token-ip-restriction", "token-restriction", True)
    assert client_auth is not None
    control = ControlSettings(
        cert_file=cert_file,
        key_file=key_file,
        client_auth=client_auth,
        relay_auth=None,  # the relay is built in: it needs no token
        addr=section.get("addr", HostPort("", 19190)),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        common=common,
    )
    return ServerSettings(
        control=control,
        relay_addr=section.get("relay-addr", HostPort("", 19191)),  # type: ignore[arg-type]
        relay_hostname=section.get("relay-hostname", "localhost"),  # type: ignore[arg-type]
        common=common,
    )


def _build_control(section: _Section, common: CommonSettings) -> ControlSettings:
    cert_file, key_file = _cert_files(section)
    client_auth = _auth(
        section,
        ("client-tokens", "client-tokens-file"),
        "client-ip-restriction",
        "client-token-ip-restriction",
        "client-token-restriction",
        True,
    )
    assert client_auth is not None
    relay_auth = _auth(
        section, ("relay-tokens", "relay-tokens-file"), "relay-ip-restriction", "relay-token-ip-restriction", None, False
    )
    return ControlSettings(
        cert_file=cert_file,
        key_file=key_file,
        client_auth=client_auth,
        relay_auth=relay_auth,
        addr=section.get("addr", HostPort("", 19190)),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        common=common,
    )


def _build_relay(section: _Section, common: CommonSettings) -> RelaySettings:
    control_addr: HostPort = section.get("control-addr", HostPort("localhost", 19190))  # type: ignore[assignment]
    return RelaySettings(
        token=_token(section),
        addr=section.get("addr", HostPort("", 19191)),  # type: ignore[arg-type]
        hostname=section.get("hostname", "localhost"),  # type: ignore[arg-type]
        control_addr=control_addr,
        control_cas=section.get("control-cas"),  # type: ignore[arg-type]
        control_name=section.get("control-name", control_addr.host),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        common=common,
    )


_BUILDERS: dict[str, Callable[[_Section, CommonSettings], object]] = {
    "client": _build_client,
    "server": _build_server,
    "control": _build_control,
    "relay": _build_relay,
}


def _common(values: dict[str, object], origins: dict[str, str], transport_names: Iterable[str] | None) -> CommonSettings:
    common = CommonSettings(
        log_level=values.get("log-level", "info"),  # type: ignore[arg-type]
        log_format=values.get("log-format", "text"),  # type: ignore[arg-type]
        transport=values.get("transport", "auto"),  # type: ignore[arg-type]
        disable_plugins=values.get("disable-plugins", ()),  # type: ignore[arg-type]
    )
    from connet_core import plugins  # the plugin manager is needed only to check names

    if common.disable_plugins:
        installed = plugins.entry_point_names()
        for name in common.disable_plugins:
            if name not in installed:
                raise ConfigError(
                    f"{origins['disable-plugins']}: disable-plugins: no installed plugin named {name!r} "
                    f"(installed: {', '.join(installed) or 'none'})"
                )
    if transport_names is None:
        transport_names = plugins.load_hooks(disable=common.disable_plugins).transport_names()
    known = sorted(set(transport_names))
    if common.transport not in known:
        where = f"{origins['transport']}: " if "transport" in origins else ""
        default = "" if "transport" in origins else " (the default)"
        raise ConfigError(
            f"{where}transport: no plugin provides a transport named {common.transport!r}{default} "
            f"(known: {', '.join(known) or 'none'})"
        )
    return common


def sections_present(files: Sequence[Path], environ: Mapping[str, str] | None = None) -> list[str]:
    """The command sections ([client], [server], [control], [relay]) the files and the
    environment define, in :data:`COMMANDS` order: how ``connet check`` infers what to check."""
    environ = os.environ if environ is None else environ
    layered = _merge_files([_to_tree(read_config_file(Path(f)), str(f), Path(f).absolute().parent) for f in files])
    layered = _deep_merge(layered, _env_layer(environ, Path.cwd()))
    return [command for command in COMMANDS if command in layered]


def load_config(
    command: str,
    files: Sequence[Path],
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    transport_names: Iterable[str] | None = None,
) -> Config:
    """Layer ``files``, then ``CONNET_*`` variables of ``environ`` (default: os.environ), then
    ``flags`` (dotted key path -> value, e.g. ``{"client.server-addr": "h:1"}``; a
    destination is ``"client.destinations.NAME.addr"``), validate, and build the settings of
    ``command``. Sections of other commands are checked for unknown keys and types only.

    ``transport_names``: the transports to accept; default, those the plugins provide
    (an embedding program with its own transport plugin passes its names).

    Raises :class:`ConfigError` with one line naming the key and where it came from; a
    token-file is read here (its token lands in ``token``).
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    environ = os.environ if environ is None else environ
    cwd = Path.cwd()
    trees = [_to_tree(read_config_file(Path(f)), str(f), Path(f).absolute().parent) for f in files]
    layered = _merge_files(trees)
    for top in (_env_layer(environ, cwd), _flag_layer(flags or {}, cwd)):
        layered = _deep_merge(_drop_groups_set_by(layered, top), top)

    origins: dict[str, str] = {}
    values = _validate_table(layered, SCHEMA, (), origins)
    common = _common(values, origins, transport_names)
    where = ", ".join(str(f) for f in files)
    section = _Section(command, values.get(command, {}), origins, where)  # type: ignore[arg-type]
    if command not in values and command != "client":
        raise section.missing(f"no [{command}] section" + (" in these files" if files else " (give --config FILE)"))
    built = _BUILDERS[command](section, common)
    return Config(command=command, common=common, sources=origins, **{command: built})  # type: ignore[arg-type]


# --- opening the files a configuration names -------------------------------------------------


def _key_origin(config: Config, key: str) -> str:
    return config.sources.get(key, "")


def _prefixed(config: Config, key: str, problem: str) -> ConfigError:
    origin = _key_origin(config, key)
    return ConfigError(f"{origin + ': ' if origin else ''}{key}: {problem}")


def _check_pem_cas(config: Config, key: str, path: Path | None) -> None:
    if path is None:
        return
    from cryptography import x509

    try:
        data = read_file(path, "pem")
    except FileRefused as exc:
        raise _prefixed(config, key, str(exc)) from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _prefixed(config, key, f"{path} holds no PEM certificate") from None


def _check_identity(config: Config, section: str, cert_file: Path, key_file: Path) -> None:
    for key, path in (("cert-file", cert_file), ("key-file", key_file)):
        try:
            read_file(path, "pem")  # the key that names a bad file is the one to blame
        except FileRefused as exc:
            raise _prefixed(config, f"{section}.{key}", str(exc)) from None
    from connet_core.certs import load_identity

    try:
        load_identity(cert_file, key_file)
    except ConfigError as exc:
        origin = _key_origin(config, f"{section}.cert-file")
        raise ConfigError(f"{origin + ': ' if origin else ''}{section}: {exc}") from None


def _check_tokens_file(config: Config, key: str, auth: AuthSettings | None, rules_key: str | None) -> None:
    if auth is None or auth.tokens.file is None:
        return
    path = auth.tokens.file
    try:
        tokens = read_tokens_file(path)
    except FileRefused as exc:
        raise _prefixed(config, key, str(exc)) from None
    except ValueError as exc:  # a token too long to be presented
        raise _prefixed(config, key, f"{path}: {exc}") from None
    if not tokens:
        raise _prefixed(config, key, f"{path} holds no tokens")
    if len(set(tokens)) != len(tokens):
        raise _prefixed(config, key, f"{path} repeats a token")
    if auth.token_rules is not None and len(auth.token_rules) != len(tokens):
        raise _prefixed(
            config,
            rules_key or key,
            f"{len(auth.token_rules)} per-token restriction(s) for {len(tokens)} token(s) in {path}: "
            "give one per token, in the same order",
        )


def _rules_key(config: Config, section: str, candidates: Sequence[str]) -> str | None:
    return next((f"{section}.{c}" for c in candidates if f"{section}.{c}" in config.sources), None)


def _check_store_dir(config: Config, key: str, path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise _prefixed(config, key, f"{path} exists and is not a directory")


def check_files(config: Config) -> None:
    """Open what ``config`` names: certificate and key (parsed, and matching), CA bundles,
    tokens files (and their count against per-token rules), store directories.
    Raises ConfigError with one line naming the key and where it came from."""
    if config.client is not None:
        _check_pem_cas(config, "client.server-cas", config.client.server_cas)
    if config.relay is not None:
        _check_pem_cas(config, "relay.control-cas", config.relay.control_cas)
        _check_store_dir(config, "relay.store-dir", config.relay.store_dir)
    if config.server is not None:
        control = config.server.control
        _check_identity(config, "server", control.cert_file, control.key_file)
        _check_tokens_file(
            config,
            "server.tokens-file",
            control.client_auth,
            _rules_key(config, "server", ("token-ip-restriction", "token-restriction")),
        )
        _check_store_dir(config, "server.store-dir", control.store_dir)
    if config.control is not None:
        control = config.control
        _check_identity(config, "control", control.cert_file, control.key_file)
        _check_tokens_file(
            config,
            "control.client-tokens-file",
            control.client_auth,
            _rules_key(config, "control", ("client-token-ip-restriction", "client-token-restriction")),
        )
        _check_tokens_file(
            config,
            "control.relay-tokens-file",
            control.relay_auth,
            _rules_key(config, "control", ("relay-token-ip-restriction",)),
        )
        _check_store_dir(config, "control.store-dir", control.store_dir)

"""Command-line flags for every key of ``[server]``, ``[control]`` and ``[relay]``, derived
from :data:`~.schema.SCHEMA` so that flags, files and ``CONNET_*`` variables cannot drift.

A key's flag is its path inside the section joined by ``-``: ``server.tokens`` is
``--tokens``, ``server.ip-restriction.allow-cidrs`` is ``--ip-restriction-allow-cidrs``
(:func:`~.layers.flag_name` gives the same name for errors). An array key (``tokens``,
``allow-cidrs``) is a repeated flag. Arrays of tables (``[[server.token-restriction]]``)
hold positional rules that do not fit flags: they stay file-only, and --help says so.
Sans-I/O: the CLI turns these specs into click options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from connet_core.config.layers import flag_name
from connet_core.errors import ConfigError
from connet_core.config.schema import _LIST_KINDS, SCHEMA, _Array, _Leaf, _Named, _Spec

__all__ = ["DAEMON_SECTIONS", "EndpointFlag", "FlagSpec", "daemon_flags", "endpoint_flag_specs", "endpoint_flags",
           "file_only_tables", "flag_values"]

DAEMON_SECTIONS = ("server", "control", "relay")

_METAVARS = {
    "listen": "HOST:PORT",
    "dial": "HOST:PORT",
    "dials": "HOST:PORT[,HOST:PORT...]",
    "host": "HOST",
    "path": "FILE",
    "strings": "TOKEN",
    "cidrs": "CIDR",
    "text": "TOKEN",
    "regex": "REGEX",
    "duration": "DURATION",
    "bool": "true|false",
    "metadata": "TEXT",
}

# what each key means, by its path inside the section (docs/configuration.md has the tables)
_HELP: dict[str, str] = {
    "addr": "UDP address to listen on.",
    "cert-file": "Certificate (chain, leaf first), PEM; required.",
    "key-file": "Private key of --cert-file, PEM; required.",
    "tokens": "A client token; repeat for more (or --tokens-file).",
    "tokens-file": "File of client tokens, one per line, # comments; re-read when it changes.",
    "client-tokens": "A client token; repeat for more (or --client-tokens-file).",
    "client-tokens-file": "File of client tokens, one per line; re-read when it changes.",
    "relay-tokens": "A relay token; repeat for more (or --relay-tokens-file). Without any, relays are refused.",
    "relay-tokens-file": "File of relay tokens, one per line; re-read when it changes.",
    "relay-addr": "UDP address of the built-in relay.",
    "relay-hostname": "Host advertised to clients for the relay.",
    "tcp-addr": "TLS-over-TCP address (e.g. :443) for clients whose UDP is blocked; off unless set.",
    "relay-tcp-addr": "TLS-over-TCP address (e.g. :8443) of the built-in relay, for clients whose UDP is blocked.",
    "status-addr": "HTTP status endpoint (JSON at /, Prometheus at /metrics).",
    "store-dir": "Directory kept across restarts (identity and secrets).",
    "token": "Relay token for the control server (or --token-file).",
    "token-file": "File whose first line is the token.",
    "hostname": "Host advertised to clients for this relay.",
    "control-addr": "Control server address; several, comma-separated, for several control instances.",
    "control-cas": "PEM CA(s) of the control server certificate.",
    "control-name": "Name checked in the control server certificate.",
    "allow-cidrs": "Admit only addresses in this CIDR; repeat for more.",
    "deny-cidrs": "Refuse addresses in this CIDR; repeat for more.",
    "metadata": "A short label (up to 128 characters) shown in status at control and here.",
    "handshake-idle-timeout": "How long a QUIC handshake may stay silent (like 5s, 1m).",
    "endpoint-expiry-timeout": "How long a client's destinations and sources outlive its session (a quick reconnect changes nothing for its peers).",
    "endpoint-expiry-disable": "Drop a client's destinations and sources as soon as its session ends.",
}

_DEFAULTS: dict[str, str] = {
    "server.addr": ":19190",
    "server.relay-addr": ":19191",
    "server.relay-hostname": "localhost",
    "control.addr": ":19190",
    "server.endpoint-expiry-timeout": "30s",
    "control.endpoint-expiry-timeout": "30s",
    "server.endpoint-expiry-disable": "false",
    "control.endpoint-expiry-disable": "false",
    "server.handshake-idle-timeout": "the transport's (5s)",
    "control.handshake-idle-timeout": "the transport's (5s)",
    "relay.handshake-idle-timeout": "the transport's (5s)",
    "relay.addr": ":19191",
    "relay.hostname": "localhost",
    "relay.control-addr": "localhost:19190",
    "relay.control-name": "the host of --control-addr",
    "relay.control-cas": "the system trust store (certifi)",
}


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """One flag: the key it sets, its name, click's parameter name, and how it reads."""

    path: tuple[str, ...]  # ("server", "ip-restriction", "allow-cidrs")
    flag: str  # "--ip-restriction-allow-cidrs"
    dest: str  # "ip_restriction_allow_cidrs"
    metavar: str
    repeated: bool
    choices: tuple[str, ...]
    help: str


def _help(path: tuple[str, ...], docs: Mapping[str, str]) -> str:
    inner = path[1:]
    text = docs.get(".".join(path)) or _HELP.get(inner[-1], "")
    if len(inner) > 1:  # a key of a sub-table: say which
        text = f"[{'.'.join(path[:-1])}] {text}"
    default = _DEFAULTS.get(".".join(path))
    return f"{text}  [default: {default}]" if default else text


def _walk(schema: Mapping[str, _Spec], path: tuple[str, ...], out: list[FlagSpec], file_only: list[str],
          docs: Mapping[str, str]) -> None:
    for key, spec in schema.items():
        key_path = (*path, key)
        if isinstance(spec, _Leaf):
            flag = flag_name(key_path)
            metavar = "DIR" if key == "store-dir" else _METAVARS.get(spec.kind, "|".join(spec.choices) or "VALUE")
            out.append(
                FlagSpec(
                    path=key_path,
                    flag=flag,
                    dest=flag[2:].replace("-", "_"),
                    metavar=metavar,
                    repeated=spec.kind in _LIST_KINDS,
                    choices=spec.choices,
                    help=_help(key_path, docs),
                )
            )
        elif isinstance(spec, (_Array, _Named)):
            file_only.append(f"[[{'.'.join(key_path)}]]" if isinstance(spec, _Array) else f"[{'.'.join(key_path)}.NAME]")
        else:
            _walk(spec, key_path, out, file_only, docs)


def with_plugin_keys() -> tuple[dict[str, _Spec], dict[str, str]]:
    """SCHEMA with the keys the installed plugins put in sections (``[server] tokens`` is the
    tokens plugin's), and their one-line docs by dotted path, for their flags' help."""
    from connet_core.config.plugin_keys import declared_keys, schema_with_plugins

    declared = declared_keys()
    docs = {f"{k.section}.{k.key}": k.doc for keys in declared.values() for k in keys if k.section}
    return schema_with_plugins(declared), docs


def daemon_flags(section: str, schema: Mapping[str, _Spec] | None = None,
                 docs: Mapping[str, str] | None = None) -> list[FlagSpec]:
    """The flags of ``connet SECTION``: one per leaf key of ``[SECTION]``, in schema order.
    ``schema``: default, SCHEMA with the installed plugins' keys (:func:`with_plugin_keys`);
    ``docs``: the plugins' keys' one-line docs by dotted path (``server.tokens``)."""
    if schema is None:
        schema, docs = with_plugin_keys()
    out: list[FlagSpec] = []
    _walk(schema[section], (section,), out, [], docs or {})  # type: ignore[arg-type]
    return out


def file_only_tables(section: str, schema: Mapping[str, _Spec] | None = None) -> list[str]:
    """The tables of ``[SECTION]`` that have no flags (arrays of tables)."""
    file_only: list[str] = []
    _walk((schema or with_plugin_keys()[0])[section], (section,), [], file_only, {})  # type: ignore[arg-type]
    return file_only


def flag_values(specs: list[FlagSpec], values: Mapping[str, object]) -> dict[tuple[str, ...], object]:
    """click's parameters -> the flags layer (key path -> value); flags not given are left out."""
    flags: dict[tuple[str, ...], object] = {}
    for spec in specs:
        value = values.get(spec.dest)
        if value is None or (spec.repeated and not value):
            continue
        flags[spec.path] = list(value) if spec.repeated else value  # type: ignore[call-overload]
    return flags


# --- the client's one destination and one source: --dst-KEY, --src-KEY --------------------

ENDPOINT_PREFIXES = {"destinations": "dst", "sources": "src"}
_ENDPOINT_HELP: dict[str, str] = {
    "addr": "Where that {what} {verb}.",
    "route": "any | direct | relay  [default: any]",
    "proxy-proto-version": "PROXY protocol header for the service: v1 | v2  [default: none]",
    "dial-timeout": "How long {dial} may take (like 2s).",
    "lb-policy": "least-latency | least-conns | round-robin | random  [default: none]",
    "lb-retry": "never | count | timed | all  [default: never with a policy]",
    "lb-retry-max": "count: destinations; timed: milliseconds  [default: 2 | 1000]",
    "protocol": "tcp | udp  [default: tcp] (docs/udp.md)",
    "udp-idle-timeout": "A UDP flow ends after this long without traffic (like 60s).  [default: 60s]",
    "udp-max-flows": "Remote senders a UDP source serves at once.  [default: 1024]",
}


_ENDPOINT_METAVARS = {"udp_idle_timeout": "DURATION", "udp_max_flows": "COUNT"}


@dataclass(frozen=True, slots=True)
class EndpointFlag:
    """One ``--dst-KEY``/``--src-KEY`` flag: a key of ``[client.destinations.NAME]`` or
    ``[client.sources.NAME]`` for the endpoint named by ``--dst-name``/``--src-name``."""

    kind: str  # "destinations" | "sources"
    key: str
    flag: str
    dest: str
    metavar: str
    help: str


def endpoint_flag_specs() -> list[EndpointFlag]:
    """Every key of a destination's and a source's table, as flags, in schema order."""
    out = []
    for kind, prefix in ENDPOINT_PREFIXES.items():
        table = SCHEMA["client"][kind]  # type: ignore[index]
        assert isinstance(table, _Named)
        for key, spec in table.schema.items():
            assert isinstance(spec, _Leaf)
            what, verb = ("destination", "connects to") if kind == "destinations" else ("source", "listens on (TCP, or UDP)")
            dial = "dialing the service" if kind == "destinations" else "one destination's answer"
            metavar = "HOST:PORT" if key == "addr" else "|".join(c for c in spec.choices if c) or _ENDPOINT_METAVARS.get(
                spec.kind, spec.kind.upper())
            out.append(EndpointFlag(kind, key, f"--{prefix}-{key}", f"{prefix}_{key.replace('-', '_')}", metavar,
                                    _ENDPOINT_HELP[key].format(what=what, verb=verb, dial=dial)))
    return out


def endpoint_flags(kind: str, name: str | None, given: Mapping[str, object]) -> dict[str, object]:
    """``--dst-name web --dst-addr h:p`` -> ``client.destinations.web.addr``; same for sources
    and every other key of the table (``given``: key -> value, None when not given)."""
    prefix = ENDPOINT_PREFIXES[kind]
    values = {key: value for key, value in given.items() if value is not None}
    if name is None:
        for key in values:
            raise ConfigError(f"flag --{prefix}-{key}: needs --{prefix}-name")
        return {}
    if not values:
        raise ConfigError(f"flag --{prefix}-name: needs --{prefix}-addr")
    return {f"client.{kind}.{name}.{key}": value for key, value in values.items()}

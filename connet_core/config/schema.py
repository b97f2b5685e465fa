"""The schema language (:class:`_Leaf`, :class:`_Named`, :class:`_Array`), the key tree
:data:`SCHEMA` every layer is checked against, and the converters that turn a raw value into
its declared type. Sans-I/O: nothing here reads a file or the environment.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

from connet_core.config.settings import LOG_FORMATS, LOG_LEVELS
from connet_core.model import HostPort, RoutePolicy
from connet_core.protocol.messages import metadata_problem
from connet_core.plugin_settings import describe_value as _describe  # one wording for both key sets

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- the key tree -------------------------------------------------------------------------------


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
PROXY_PROTO_VERSIONS = ("v1", "v2")
# "" is the original connet's spelling of "no policy" (and of "never"); "none" says it in words
LB_POLICIES = ("", "none", "least-latency", "least-conns", "round-robin", "random")
LB_RETRIES = ("", "never", "count", "timed", "all")
_PROTOCOLS = ("tcp", "udp")
# a UDP source's bounds (docs/udp.md): a flow is a stream, and a connection carries at
# most TransportOptions.max_streams (4096) of them at once
UDP_IDLE_TIMEOUT_RANGE = (1.0, 86400.0)
UDP_MAX_FLOWS_RANGE = (1, 4096)

SCHEMA: dict[str, _Spec] = {
    "log-level": _Leaf("enum", LOG_LEVELS),
    "log-format": _Leaf("enum", LOG_FORMATS),
    "transport": _Leaf("text"),
    "disable-plugins": _Leaf("strings"),
    "client": {
        "token": _Leaf("text"),
        "token-file": _Leaf("path"),
        "server-addr": _Leaf("dials"),
        "server-cas": _Leaf("path"),
        "server-name": _Leaf("host"),
        "server-tcp-addr": _Leaf("dials"),
        "udp": _Leaf("enum", ("auto", "never")),
        "direct-addr": _Leaf("listen"),
        "status-addr": _Leaf("listen"),
        "port-mapping": _Leaf("bool"),
        "metadata": _Leaf("metadata"),
        "handshake-idle-timeout": _Leaf("duration"),
        "destinations": _Named({
            "addr": _Leaf("dial"),
            "route": _Leaf("enum", _ROUTES),
            "proxy-proto-version": _Leaf("enum", PROXY_PROTO_VERSIONS),
            "dial-timeout": _Leaf("duration"),
            "protocol": _Leaf("enum", _PROTOCOLS),
        }),
        "sources": _Named({
            "addr": _Leaf("listen"),
            "route": _Leaf("enum", _ROUTES),
            "dial-timeout": _Leaf("duration"),
            "lb-policy": _Leaf("enum", LB_POLICIES),
            "lb-retry": _Leaf("enum", LB_RETRIES),
            "lb-retry-max": _Leaf("count"),
            "protocol": _Leaf("enum", _PROTOCOLS),
            "udp-idle-timeout": _Leaf("udp_idle_timeout"),
            "udp-max-flows": _Leaf("udp_max_flows"),
        }),
    },
    "server": {
        "addr": _Leaf("listen"),
        "cert-file": _Leaf("path"),
        "key-file": _Leaf("path"),
        "tcp-addr": _Leaf("listen"),
        "relay-addr": _Leaf("listen"),
        "relay-tcp-addr": _Leaf("listen"),
        "relay-hostname": _Leaf("host"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
        "handshake-idle-timeout": _Leaf("duration"),
        "endpoint-expiry-timeout": _Leaf("duration"),
        "endpoint-expiry-disable": _Leaf("bool"),
    },
    "control": {
        "addr": _Leaf("listen"),
        "tcp-addr": _Leaf("listen"),
        "cert-file": _Leaf("path"),
        "key-file": _Leaf("path"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
        "handshake-idle-timeout": _Leaf("duration"),
        "endpoint-expiry-timeout": _Leaf("duration"),
        "endpoint-expiry-disable": _Leaf("bool"),
    },
    "relay": {
        "token": _Leaf("text"),
        "token-file": _Leaf("path"),
        "addr": _Leaf("listen"),
        "tcp-addr": _Leaf("listen"),
        "hostname": _Leaf("host"),
        "control-addr": _Leaf("dials"),
        "control-cas": _Leaf("path"),
        "control-name": _Leaf("host"),
        "status-addr": _Leaf("listen"),
        "store-dir": _Leaf("path"),
        "metadata": _Leaf("metadata"),
        "handshake-idle-timeout": _Leaf("duration"),
    },
}

# Keys that say the same thing two ways: exactly one may be given, and a higher layer that
# sets either replaces both from the lower layers (docs/configuration.md: "a token given by
# flag or environment replaces both token and token-file from files"). The servers' token
# lists are the tokens plugin's keys, paired the same way (PluginKey.alternative).
TOKEN_GROUPS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("client", ("token", "token-file")),
    ("relay", ("token", "token-file")),
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
    "control.relay-tcp-addr": "[control] has no relay: use [server], or run connet relay",
    "control.ip-restriction": "in [control] it is client-ip-restriction or relay-ip-restriction",
    "control.token-ip-restriction": "in [control] it is client-token-ip-restriction or relay-token-ip-restriction",
    "control.token-restriction": "in [control] it is client-token-restriction",
}



@dataclass(frozen=True, slots=True)
class _Value:
    """A leaf value with where it came from; ``base_dir`` resolves relative paths; ``rank`` is
    its layer (0 files, 1 environment, 2 flags: a token group set by a higher rank replaces
    the members of the lower ones)."""

    value: object
    origin: str
    base_dir: Path
    rank: int = 0


class _Invalid(ValueError):
    """A value failed its converter; the message is the reason, without key or origin."""


def _dotted(path: Sequence[str]) -> str:
    return ".".join(path)


# --- converters -----------------------------------------------------------------------------


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
        # As in the original connet: ":3000" means this machine when dialing (and every
        # interface when listening), so its quick start's files work unchanged.
        addr = HostPort("localhost", addr.port)
    if addr.port == 0:
        raise _Invalid(f"{value!r}: port 0 cannot be dialed")
    return addr


def _dials(value: object) -> tuple[HostPort, ...]:
    """One address or several (control instances of one deployment): an array, or one
    string with commas (``a:19190,b:19190``), so a flag or variable can carry a list too."""
    items = value if isinstance(value, list) else _text(value).split(",")
    if not items:
        raise _Invalid("expected HOST:PORT or an array of them, got an empty array")
    addrs = []
    for index, item in enumerate(items, 1):
        try:
            addrs.append(_dial(item.strip() if isinstance(item, str) else item))
        except _Invalid as exc:
            raise _Invalid(f"item {index}: {exc}" if len(items) > 1 else str(exc)) from None
    return tuple(addrs)


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


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = 24 * 3600.0


def _duration(value: object) -> float:
    """Seconds, from a number of seconds or a Go-style duration ("500ms", "30s", "1m30s")."""
    if isinstance(value, bool):
        raise _Invalid(f"expected a duration such as \"30s\", got {_describe(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise _Invalid(f"{value!r} is not a duration (like \"500ms\", \"30s\" or \"1m\")")
    else:
        raise _Invalid(f"expected a duration such as \"30s\", got {_describe(value)}")
    if not 0 <= seconds <= MAX_DURATION:
        raise _Invalid(f"{value!r} is out of range 0 to 24h")
    return seconds


def _count(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected a whole number, got {_describe(value)}")
    if not 0 <= value <= 1_000_000:
        raise _Invalid(f"{value} is out of range 0-1000000")
    return value


def _bool(value: object) -> bool:
    # a TOML boolean, or from a flag or CONNET_* variable the words true/false
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    shown = repr(value) if isinstance(value, str) else _describe(value)
    raise _Invalid(f"expected true or false, got {shown}")


def _metadata(value: object) -> str:
    text = _text(value)
    problem = metadata_problem(text)
    if problem is not None:
        raise _Invalid(problem)
    return text


def _udp_idle_timeout(value: object) -> float:
    low, high = UDP_IDLE_TIMEOUT_RANGE
    seconds = _duration(value)
    if not low <= seconds <= high:
        raise _Invalid(f"{value!r}: give seconds from {low:.0f} to {high:.0f} (1s to 24h)")
    return seconds


def _udp_max_flows(value: object) -> int:
    low, high = UDP_MAX_FLOWS_RANGE
    count = _count(value)
    if not low <= count <= high:
        raise _Invalid(f"{value!r}: give a number of flows from {low} to {high}")
    return count


_CONVERTERS: dict[str, Callable[[object], object]] = {
    "udp_idle_timeout": _udp_idle_timeout,
    "udp_max_flows": _udp_max_flows,
    "duration": _duration,
    "count": _count,
    "bool": _bool,
    "metadata": _metadata,
    "text": _text,
    "host": _host,
    "listen": _listen,
    "dial": _dial,
    "dials": _dials,
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
            shown = ", ".join(c or '""' for c in leaf.choices)  # "" is a choice: no policy, say
            raise _Invalid(f"{raw!r} is not one of {shown}")
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

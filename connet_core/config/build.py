"""Checking the merged tree against the schema and building the frozen settings of one
command (``load_config``), or listing the sections present (``sections_present``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from connet_core.config.layers import _env_layer, _flag_layer, _to_tree, file_layer
from connet_core.config.merge import Table as _Table
from connet_core.config.merge import layer, unknown_hint
from connet_core.config.plugin_keys import (
    PLUGINS,
    _PluginLeaf,
    alternatives,
    declared_keys,
    schema_with_plugins,
    section_keys,
)
from connet_core.config.schema import TOKEN_GROUPS, _Array, _convert, _describe, _dotted, _Invalid, _Named, _Spec, _Value
from connet_core.config.settings import (
    COMMANDS,
    ENV_PREFIX,
    ClientSettings,
    CommonSettings,
    Config,
    ControlSettings,
    EndpointSettings,
    RelaySettings,
    ServerSettings,
)
from connet_core.config_limits import token_problem
from connet_core.errors import ConfigError
from connet_core.files import FileRefused
from connet_core.plugin_settings import PluginKey, SettingProblem
from connet_core.plugin_settings import convert as convert_plugin_value
from connet_core.model import HostPort, Role, RoutePolicy
from connet_core.token_files import read_token_file

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
            raise ConfigError(f"{node.origin}: {dotted}: unknown key{unknown_hint(key_path, schema)}")
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
                if isinstance(spec, _PluginLeaf):
                    out[key] = convert_plugin_value(spec.kind, node.value, node.base_dir)
                else:
                    out[key] = _convert(spec, node)
            except (_Invalid, ValueError) as exc:
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


def _cert_files(section: _Section) -> tuple[Path, Path]:
    for key in ("cert-file", "key-file"):
        if key not in section.values:
            raise section.missing(f"{key} is required (in [{section.name}] or {_env_name(section.name, key)})")
    return section.get("cert-file"), section.get("key-file")  # type: ignore[return-value]


def _build_client(section: _Section, common: CommonSettings) -> ClientSettings:
    server_addrs: tuple[HostPort, ...] = section.get("server-addr", (HostPort("localhost", 19190),))  # type: ignore
    server_addr = server_addrs[0]
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
                    proxy_proto_version=values.get("proxy-proto-version", ""),  # type: ignore[arg-type]
                    dial_timeout=values.get("dial-timeout"),  # type: ignore[arg-type]
                    lb_policy=values.get("lb-policy", ""),  # type: ignore[arg-type]
                    lb_retry=values.get("lb-retry", ""),  # type: ignore[arg-type]
                    lb_retry_max=values.get("lb-retry-max", 0),  # type: ignore[arg-type]
                    protocol=values.get("protocol", "tcp"),  # type: ignore[arg-type]
                    udp_idle_timeout=values.get("udp-idle-timeout", 60.0),  # type: ignore[arg-type]
                    udp_max_flows=values.get("udp-max-flows", 1024),  # type: ignore[arg-type]
                )
            )
    server_tcp_addrs: tuple[HostPort, ...] = section.get("server-tcp-addr", ())  # type: ignore[assignment]
    if section.get("udp", "auto") == "never" and not server_tcp_addrs:
        origin = section.origins.get("client.udp", section.where)
        raise ConfigError(f"{origin}: client.udp: \"never\" needs server-tcp-addr (where control is reachable over TCP)")
    if len(server_tcp_addrs) > 1 and len(server_tcp_addrs) != len(server_addrs):
        origin = section.origins.get("client.server-tcp-addr", section.where)
        raise ConfigError(f"{origin}: client.server-tcp-addr: {len(server_tcp_addrs)} addresses for "
                          f"{len(server_addrs)} server-addr addresses: give one (for all), or one per server-addr")
    return ClientSettings(
        token=_token(section),
        server_addr=server_addr,
        server_cas=section.get("server-cas"),  # type: ignore[arg-type]
        server_name=section.get("server-name", server_addr.host),  # type: ignore[arg-type]
        server_addrs=server_addrs,
        server_name_set="server-name" in section.values,
        server_tcp_addr=server_tcp_addrs[0] if server_tcp_addrs else None,
        server_tcp_addrs=server_tcp_addrs,
        udp=section.get("udp", "auto"),  # type: ignore[arg-type]
        direct_addr=section.get("direct-addr", HostPort("", 19192)),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        port_mapping=section.get("port-mapping", True),  # type: ignore[arg-type]
        destinations=tuple(endpoints[Role.DESTINATION]),
        sources=tuple(endpoints[Role.SOURCE]),
        metadata=section.get("metadata", ""),  # type: ignore[arg-type]
        handshake_idle_timeout=section.get("handshake-idle-timeout"),  # type: ignore[arg-type]
        common=common,
    )


def _build_server(section: _Section, common: CommonSettings) -> ServerSettings:
    cert_file, key_file = _cert_files(section)
    control = ControlSettings(
        cert_file=cert_file,
        key_file=key_file,
        accept_relays=False,  # the relay is built in
        addr=section.get("addr", HostPort("", 19190)),  # type: ignore[arg-type]
        tcp_addr=section.get("tcp-addr"),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        handshake_idle_timeout=section.get("handshake-idle-timeout"),  # type: ignore[arg-type]
        endpoint_expiry=_endpoint_expiry(section),
        common=common,
    )
    return ServerSettings(
        control=control,
        relay_addr=section.get("relay-addr", HostPort("", 19191)),  # type: ignore[arg-type]
        relay_tcp_addr=section.get("relay-tcp-addr"),  # type: ignore[arg-type]
        relay_hostname=section.get("relay-hostname", "localhost"),  # type: ignore[arg-type]
        common=common,
    )


def _endpoint_expiry(section: _Section) -> float:
    """endpoint-expiry-timeout (30 s), or 0 when endpoint-expiry-disable is true."""
    if section.get("endpoint-expiry-disable", False):
        return 0.0
    return section.get("endpoint-expiry-timeout", 30.0)  # type: ignore[return-value]


def _build_control(section: _Section, common: CommonSettings) -> ControlSettings:
    cert_file, key_file = _cert_files(section)
    return ControlSettings(
        cert_file=cert_file,
        key_file=key_file,
        accept_relays=True,  # which relay may register is the authentication plugins' call
        addr=section.get("addr", HostPort("", 19190)),  # type: ignore[arg-type]
        tcp_addr=section.get("tcp-addr"),  # type: ignore[arg-type]
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        handshake_idle_timeout=section.get("handshake-idle-timeout"),  # type: ignore[arg-type]
        endpoint_expiry=_endpoint_expiry(section),
        common=common,
    )


def _build_relay(section: _Section, common: CommonSettings) -> RelaySettings:
    control_addrs: tuple[HostPort, ...] = section.get("control-addr", (HostPort("localhost", 19190),))  # type: ignore
    control_addr = control_addrs[0]
    return RelaySettings(
        token=_token(section),
        addr=section.get("addr", HostPort("", 19191)),  # type: ignore[arg-type]
        tcp_addr=section.get("tcp-addr"),  # type: ignore[arg-type]
        hostname=section.get("hostname", "localhost"),  # type: ignore[arg-type]
        control_addr=control_addr,
        control_cas=section.get("control-cas"),  # type: ignore[arg-type]
        control_name=section.get("control-name", control_addr.host),  # type: ignore[arg-type]
        control_addrs=control_addrs,
        control_name_set="control-name" in section.values,
        status_addr=section.get("status-addr"),  # type: ignore[arg-type]
        store_dir=section.get("store-dir"),  # type: ignore[arg-type]
        metadata=section.get("metadata", ""),  # type: ignore[arg-type]
        handshake_idle_timeout=section.get("handshake-idle-timeout"),  # type: ignore[arg-type]
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
        plugins=values.get(PLUGINS, {}),  # type: ignore[arg-type]
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


def _with_section_keys(tables: Mapping[str, Mapping[str, object]], declared: Mapping[str, Sequence[PluginKey]],
                       section: _Section) -> dict[str, dict[str, object]]:
    """Each plugin's settings as its hooks get them: its ``[plugins.NAME]`` table, and its
    keys in the running command's section (None where not set). Two keys that say one thing
    two ways (``alternative``) may not both be given; a key that ``needs`` others, not alone."""
    for where, (first, second) in alternatives(declared):
        if where == section.name and first in section.values and second in section.values:
            raise section.error(second, f"give {first} or {second}, not both ({first} from {section.origin(first)})")
    for keys in section_keys(declared, section.name).values():
        for key in keys:
            if key.needs and key.key in section.values and not any(n in section.values for n in key.needs):
                raise section.error(key.key, f"needs {' or '.join(key.needs)}")
    out = {name: dict(values) for name, values in tables.items()}
    for name, keys in section_keys(declared, section.name).items():
        out.setdefault(name, {}).update({key.key: section.get(key.key) for key in keys})
    return out


def sections_present(files: Sequence[Path], environ: Mapping[str, str] | None = None, *,
                     plugin_keys: Mapping[str, Sequence[PluginKey]] | None = None) -> list[str]:
    """The command sections ([client], [server], [control], [relay]) the files and the
    environment define, in :data:`COMMANDS` order: how ``connet check`` infers what to check."""
    environ = os.environ if environ is None else environ
    declared = declared_keys() if plugin_keys is None else plugin_keys
    schema = schema_with_plugins(declared)
    layered = layer([*(file_layer(Path(f)) for f in files), _env_layer(environ, Path.cwd(), schema)], schema,
                    (*TOKEN_GROUPS, *alternatives(declared)))
    return [command for command in COMMANDS if command in layered]


def load_config(
    command: str,
    files: Sequence[Path],
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    transport_names: Iterable[str] | None = None,
    plugin_keys: Mapping[str, Sequence[PluginKey]] | None = None,
) -> Config:
    """Layer ``files``, then ``CONNET_*`` variables of ``environ`` (default: os.environ), then
    ``flags`` (dotted key path -> value, e.g. ``{"client.server-addr": "h:1"}``; a
    destination is ``"client.destinations.NAME.addr"``), validate, and build the settings of
    ``command``. Sections of other commands are checked for unknown keys and types only.

    ``transport_names``: the transports to accept; default, those the plugins provide
    (an embedding program with its own transport plugin passes its names).
    ``plugin_keys``: the keys ``[plugins.NAME]`` may hold, by plugin name; default, what the
    installed plugins declare (``connet_plugin_keys``).

    Raises :class:`ConfigError` with one line naming the key and where it came from; a
    token-file is read here (its token lands in ``token``).
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    environ = os.environ if environ is None else environ
    cwd = Path.cwd()
    declared = declared_keys() if plugin_keys is None else plugin_keys
    schema = schema_with_plugins(declared)
    groups = (*TOKEN_GROUPS, *alternatives(declared))
    layered = layer([*(file_layer(Path(f)) for f in files), _env_layer(environ, cwd, schema),
                     _flag_layer(flags or {}, cwd)], schema, groups)

    origins: dict[str, str] = {}
    values = _validate_table(layered, schema, (), origins)
    where = ", ".join(str(f) for f in files)
    section = _Section(command, values.get(command, {}), origins, where)  # type: ignore[arg-type]
    values[PLUGINS] = _with_section_keys(values.get(PLUGINS, {}), declared, section)  # type: ignore[arg-type]
    common = _common(values, origins, transport_names)
    if command not in values and command != "client":
        raise section.missing(f"no [{command}] section" + (" in these files" if files else " (give --config FILE)"))
    built = _BUILDERS[command](section, common)
    check_plugin_settings(section.name, common, origins, where, files=False)
    return Config(command=command, common=common, sources=origins, **{command: built})  # type: ignore[arg-type]


def check_plugin_settings(section: str, common: CommonSettings, origins: Mapping[str, str], where: str, *,
                          files: bool) -> None:
    """The enabled plugins' own checks of their settings (``connet_check_settings``), a
    problem reported like connet's own: one line naming ``section.key`` and its origin."""
    from connet_core import plugins  # the plugin manager, only when a configuration is loaded

    hooks = plugins.load_hooks(disable=common.disable_plugins, plugin_settings=common.plugins)
    try:
        hooks.check_settings(section, files)
    except SettingProblem as problem:
        if problem.key is None:
            raise ConfigError(f"{where + ': ' if where else ''}{section}: {problem.message}") from None
        origin = origins.get(f"{section}.{problem.key}", where)
        raise ConfigError(f"{origin + ': ' if origin else ''}{section}.{problem.key}: {problem.message}") from None

"""The frozen settings a configuration builds, and the names of its commands.

These dataclasses are what the daemons, the hooks and embedding programs get; nothing in them
knows how the configuration was layered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from connet_core.model import HostPort, IPNetwork, Role, RoutePolicy  # noqa: F401


@dataclass(frozen=True, slots=True)
class CommonSettings:
    log_level: str = "info"  # debug | info | warn | error
    log_format: str = "text"  # text | json
    transport: str = "auto"  # the quic plugin: qh3 when it imports, else aioquic
    disable_plugins: tuple[str, ...] = ()
    # [plugins.NAME] as given (validated against what each plugin declares), by plugin name;
    # the plugins' hooks get them with defaults filled in (connet_core.plugin_settings)
    plugins: Mapping[str, Mapping[str, object]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    """A destination or a source."""

    name: str
    role: Role
    addr: HostPort
    route: RoutePolicy = RoutePolicy.ANY
    # a destination: the PROXY protocol header for its service ("" none, "v1", "v2"), and
    # how long dialing the service may take; a source: how long one destination may take to
    # accept a stream request. None: the built-in default (docs/configuration.md)
    proxy_proto_version: str = ""
    dial_timeout: float | None = None
    # a source: load balancing over the destinations announcing its name (client/balance.py)
    lb_policy: str = ""  # "" none | least-latency | least-conns | round-robin | random
    lb_retry: str = ""  # "" the policy's default | never | count | timed | all
    lb_retry_max: int = 0  # count: destinations; timed: milliseconds; 0: the default
    protocol: str = "tcp"  # "tcp" or "udp" (docs/udp.md)
    udp_idle_timeout: float = 60.0  # a UDP source's flow ends after this long without traffic
    udp_max_flows: int = 1024  # a UDP source's senders at once; more are dropped


@dataclass(frozen=True, slots=True)
class ClientSettings:
    token: str
    server_addr: HostPort = HostPort("localhost", 19190)
    server_cas: Path | None = None
    server_name: str = "localhost"
    # several control instances (docs/scaling.md): tried in turn; () means just server_addr.
    # Without an explicit server-name each address is checked against its own host.
    server_addrs: tuple[HostPort, ...] = ()
    server_name_set: bool = False
    server_tcp_addr: HostPort | None = None  # control over TLS-over-TCP, where UDP is blocked
    # several: one per server_addrs entry, by position; one (or ()+server_tcp_addr): for all
    # (connet_core/control_addresses.py)
    server_tcp_addrs: tuple[HostPort, ...] = ()
    udp: str = "auto"  # auto: UDP first, TCP after UDP_FALLBACK_AFTER; never: TCP only
    direct_addr: HostPort = HostPort("", 19192)
    status_addr: HostPort | None = None
    port_mapping: bool = True  # ask the router (PCP, NAT-PMP, UPnP) to map direct-addr's port
    destinations: tuple[EndpointSettings, ...] = ()
    sources: tuple[EndpointSettings, ...] = ()
    metadata: str = ""  # a label shown in status (own and at control)
    handshake_idle_timeout: float | None = None  # QUIC handshakes; None: the transport's default
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class ControlSettings:
    cert_file: Path
    key_file: Path
    # whether relays may register (connet control; the relay of connet server is built in).
    # Who may is the authentication plugins' to say (the tokens plugin: [control] relay-tokens).
    accept_relays: bool = False
    addr: HostPort = HostPort("", 19190)
    tcp_addr: HostPort | None = None  # also over TLS-over-TCP (off unless set)
    status_addr: HostPort | None = None
    store_dir: Path | None = None  # None: a new temp directory per run
    handshake_idle_timeout: float | None = None
    # how long a destination or source whose session is gone stays announced (a reconnect
    # within it changes nothing for its peers); 0: dropped at once
    endpoint_expiry: float = 30.0
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class RelaySettings:
    token: str
    addr: HostPort = HostPort("", 19191)
    tcp_addr: HostPort | None = None  # also over TLS-over-TCP (off unless set), advertised beside addr
    hostname: str = "localhost"
    control_addr: HostPort = HostPort("localhost", 19190)
    control_cas: Path | None = None
    control_name: str = "localhost"
    control_addrs: tuple[HostPort, ...] = ()  # as ClientSettings.server_addrs
    control_name_set: bool = False
    status_addr: HostPort | None = None
    store_dir: Path | None = None
    metadata: str = ""
    handshake_idle_timeout: float | None = None
    common: CommonSettings = CommonSettings()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Control and relay in one process (``connet server``); the relay is built in."""

    control: ControlSettings
    relay_addr: HostPort = HostPort("", 19191)
    relay_tcp_addr: HostPort | None = None
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

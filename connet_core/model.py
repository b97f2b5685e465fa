"""Plain frozen data shared by the core, the plugins and the engines."""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Role(str, enum.Enum):
    DESTINATION = "destination"
    SOURCE = "source"

    def opposite(self) -> "Role":
        return Role.SOURCE if self is Role.DESTINATION else Role.DESTINATION


class RoutePolicy(str, enum.Enum):
    ANY = "any"
    DIRECT = "direct"
    RELAY = "relay"

    def allows(self, kind: "PathKind") -> bool:
        return self is RoutePolicy.ANY or self.value == kind.value


class PathKind(str, enum.Enum):
    DIRECT = "direct"
    RELAY = "relay"


class PrincipalKind(str, enum.Enum):
    CLIENT = "client"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host and a port. ``host`` is a name or an IP literal without brackets; ``""`` means
    every interface (dual stack where the system allows)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, default_host: str | None = None) -> "HostPort":
        """Parse ``host:port``, ``[v6]:port`` or ``:port``. Raises ValueError with a short reason."""
        if not isinstance(text, str):
            raise ValueError("expected a string host:port")
        text = text.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0 or not text[end + 1 :].startswith(":"):
                raise ValueError(f"{text!r} is not [ipv6]:port")
            host, port_text = text[1:end], text[end + 2 :]
            try:
                ipaddress.IPv6Address(host.split("%", 1)[0])
            except ValueError:
                raise ValueError(f"{host!r} is not an IPv6 address") from None
        else:
            if text.count(":") != 1:
                raise ValueError(f"{text!r} is not host:port (write IPv6 as [addr]:port)")
            host, port_text = text.split(":")
            if not host and default_host is not None:
                host = default_host
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 0-65535")
        if host and any(c.isspace() for c in host):
            raise ValueError(f"host {host!r} contains white space")
        return cls(host, port)

    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address (IPv4-mapped IPv6 folded to IPv4), or None for a name."""
        try:
            addr = ipaddress.ip_address(self.host.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        return addr

    def normalized(self) -> "HostPort":
        """The same address with an IPv4-mapped IPv6 host written as IPv4."""
        ip = self.ip()
        if ip is not None and str(ip) != self.host:
            return HostPort(str(ip), self.port)
        return self

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def certificate_hash(der: bytes) -> bytes:
    """SHA-256 of a DER certificate: how peers and grants name an identity."""
    return hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to, as the plugin that authenticated it says.

    ``kind`` tells a client from a relay; ``label`` is for logs only (never the token
    itself). ``claims`` is what the authenticating plugin knows about the principal, for the
    authorize hooks: the keys of a per-token rule (``allow-cidrs``, ``deny-cidrs``,
    ``name-matches``, ``role-matches``) are enforced by the cidr plugin whoever set them
    (the tokens plugin puts a configured token's ``token-restriction`` there); others are
    the plugin's own."""

    kind: PrincipalKind
    label: str = ""
    claims: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, slots=True)
class Veto:
    """What ``connet_authenticate`` returns to refuse a token whatever the other plugins say
    (docs/hooks.md, "the veto rule"). ``reason`` goes to the log, never to the peer;
    ``plugin`` is filled in by connet."""

    reason: str
    plugin: str = ""


@dataclass(frozen=True, slots=True)
class PathCandidate:
    """One way to reach a peer, as route selection sees it.

    ``relay`` names the relay (its host:port) for a relayed path, None for a direct one;
    ``rtt`` is the connection's smoothed RTT in seconds, None while unmeasured."""

    kind: PathKind
    peer: str
    relay: str | None = None
    rtt: float | None = None
    key: object = field(default=None, compare=False, hash=False)  # the engine's handle; opaque to plugins

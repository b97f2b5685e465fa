"""Default plugin ``cidr``: address restrictions and per-token name/role rules.

Its keys are the address restrictions of ``[server]`` (``ip-restriction``) and ``[control]``
(``client-ip-restriction``, ``relay-ip-restriction``). Per-principal rules come from the
principal's claims, whoever authenticated it (the tokens plugin puts a configured token's
``token-restriction`` there).

The CIDR rule (docs/configuration.md): an address is rejected if it matches any ``deny-cidrs`` entry, or if
``allow-cidrs`` is non-empty and it matches none of them. An IPv4-mapped IPv6 address is
judged as the IPv4 address; so is a configured network inside ``::ffff:0:0/96``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping

from dataclasses import dataclass

from connet_core import hookimpl
from connet_core.model import Principal, PrincipalKind, Role
from connet_core.plugin_settings import PluginKey

__all__ = ["CidrRule", "TokenRule", "address_allowed", "cidr_refusal", "connet_admit_address", "connet_authorize",
           "connet_plugin_keys", "fold_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CidrRule:
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenRule:
    """A principal's own rule (from its claims)."""

    cidr: CidrRule = CidrRule()
    name_matches: str | None = None  # a regular expression that must match the whole name
    role_matches: Role | None = None


_CIDRS = (("allow-cidrs", "cidrs"), ("deny-cidrs", "cidrs"))
# (section, key) of the address restriction of each kind of principal; the key holds a table
_RESTRICTIONS = {
    ("server", PrincipalKind.CLIENT): "ip-restriction",
    ("control", PrincipalKind.CLIENT): "client-ip-restriction",
    ("control", PrincipalKind.RELAY): "relay-ip-restriction",
}


@hookimpl(trylast=True)
def connet_plugin_keys() -> list[PluginKey]:
    return [
        PluginKey("ip-restriction", "table", doc="Client addresses admitted (CIDR rule).", section="server",
                  fields=_CIDRS),
        PluginKey("client-ip-restriction", "table", doc="Client addresses admitted (CIDR rule).", section="control",
                  fields=_CIDRS),
        PluginKey("relay-ip-restriction", "table", doc="Relay addresses admitted (CIDR rule).", section="control",
                  fields=_CIDRS, needs=("relay-tokens", "relay-tokens-file")),
    ]


def _restriction(plugin_settings: Mapping[str, object], kind: PrincipalKind) -> CidrRule:
    """The address rule for ``kind`` under the running command (its section's keys are the
    ones present); none set: everyone."""
    for (_, for_kind), key in _RESTRICTIONS.items():
        if for_kind is kind and key in plugin_settings:
            values = plugin_settings[key]
            if isinstance(values, Mapping):
                return CidrRule(allow=tuple(values.get("allow-cidrs", ())), deny=tuple(values.get("deny-cidrs", ())))
            return CidrRule()
    return CidrRule()

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def fold_address(address: IPAddress) -> IPAddress:
    """``address`` with an IPv4-mapped IPv6 address written as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=1024)
def _fold_network(network: IPNetwork) -> IPNetwork:
    """A network inside ``::ffff:0:0/96`` as the IPv4 network it maps; others unchanged."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Address(int(network.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, network.prefixlen - 96))
    return network


def _matches(address: IPAddress, network: IPNetwork) -> bool:
    network = _fold_network(network)
    return address.version == network.version and address in network


def cidr_refusal(address: IPAddress, rule: CidrRule) -> str | None:
    """Why ``rule`` rejects ``address`` (for the log), or None if it is allowed."""
    address = fold_address(address)
    for network in rule.deny:
        if _matches(address, network):
            return f"{address} matches deny-cidrs {network}"
    if rule.allow and not any(_matches(address, network) for network in rule.allow):
        return f"{address} matches no allow-cidrs"
    return None


def address_allowed(address: IPAddress, rule: CidrRule) -> bool:
    """The pure CIDR decision: True if ``rule`` lets ``address`` in."""
    return cidr_refusal(address, rule) is None


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@hookimpl(trylast=True)
def connet_admit_address(kind: PrincipalKind, address: IPAddress, plugin_settings: Mapping[str, object]) -> str | None:
    reason = cidr_refusal(address, _restriction(plugin_settings, kind))
    return None if reason is None else f"{kind.value} ip-restriction: {reason}"


@hookimpl(trylast=True)
def connet_authorize(
    principal: Principal,
    address: IPAddress,
    name: str | None,
    role: Role | None,
) -> str | None:
    if not principal.claims:
        return None
    return _claims_refusal(principal.label or principal.kind.value, principal.claims, address, name, role)


def _claims_refusal(who: str, claims: object, address: IPAddress, name: str | None, role: Role | None) -> str | None:
    """A principal's own rule, as the plugin that authenticated it put it in ``claims``
    (``allow-cidrs``, ``deny-cidrs``: CIDR strings; ``name-matches``: a regular expression;
    ``role-matches``: destination or source). A claim that cannot be read refuses."""
    assert isinstance(claims, Mapping)
    try:
        cidr = CidrRule(
            allow=tuple(ipaddress.ip_network(c, strict=False) for c in claims.get("allow-cidrs", ())),
            deny=tuple(ipaddress.ip_network(c, strict=False) for c in claims.get("deny-cidrs", ())),
        )
        wanted = claims.get("role-matches")
        rule = TokenRule(cidr=cidr, name_matches=claims.get("name-matches"),
                         role_matches=Role(wanted) if wanted not in (None, "any") else None)
    except (TypeError, ValueError) as exc:
        return f"{who}: unreadable claims ({exc})"
    return _rule_refusal(who, rule, address, name, role)


def _rule_refusal(who: str, rule: TokenRule, address: IPAddress, name: str | None, role: Role | None) -> str | None:
    reason = cidr_refusal(address, rule.cidr)
    if reason is not None:
        return f"{who} token restriction: {reason}"
    if name is not None and rule.name_matches is not None:
        try:
            pattern = _compile(rule.name_matches)
        except re.error as exc:
            return f"{who}: name-matches {rule.name_matches!r} is not a valid regular expression ({exc.msg})"
        if pattern.fullmatch(name) is None:
            return f"{who}: name {name!r} does not match name-matches {rule.name_matches!r}"
    if role is not None and rule.role_matches is not None and Role(role) is not Role(rule.role_matches):
        return f"{who}: role {Role(role).value} is not role-matches {Role(rule.role_matches).value}"
    return None

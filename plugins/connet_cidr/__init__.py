"""Default plugin ``cidr``: address restrictions and per-token name/role rules.

The CIDR rule (docs/configuration.md): an address is rejected if it matches any ``deny-cidrs`` entry, or if
``allow-cidrs`` is non-empty and it matches none of them. An IPv4-mapped IPv6 address is
judged as the IPv4 address; so is a configured network inside ``::ffff:0:0/96``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping

from connet_core import hookimpl
from connet_core.model import AuthSettings, CidrRule, Principal, PrincipalKind, Role, TokenRule

__all__ = ["address_allowed", "cidr_refusal", "connet_admit_address", "connet_authorize", "fold_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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
def connet_admit_address(settings: AuthSettings, kind: PrincipalKind, address: IPAddress) -> str | None:
    reason = cidr_refusal(address, settings.ip_restriction)
    return None if reason is None else f"{kind.value} ip-restriction: {reason}"


@hookimpl(trylast=True)
def connet_authorize(
    settings: AuthSettings,
    principal: Principal,
    address: IPAddress,
    name: str | None,
    role: Role | None,
) -> str | None:
    who = principal.label or f"token#{principal.token_index}"
    if principal.claims:
        reason = _claims_refusal(who, principal.claims, address, name, role)
        if reason is not None:
            return reason
    rules = settings.token_rules
    if rules is None:
        return None
    if principal.token_index is None or not 0 <= principal.token_index < len(rules):
        # rules are positional: a token without a rule is a configuration that slipped past
        # validation (or a third-party token source); refusing is the safe reading
        return f"{who}: no per-token restriction at position {principal.token_index} ({len(rules)} configured)"
    return _rule_refusal(who, rules[principal.token_index], address, name, role)


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

"""connet_cidr.address_allowed against a reference written directly on ``ipaddress``."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from connet_cidr import address_allowed, cidr_refusal
from connet_cidr import CidrRule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAPPED_PREFIX = 0xFFFF << 32

v4_addresses = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6_addresses = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
mapped_addresses = v4_addresses.map(lambda a: ipaddress.IPv6Address(MAPPED_PREFIX | int(a)))
# addresses near a few fixed networks, so that matches are common and not only misses
near_addresses = st.sampled_from(
    ["10.1.2.3", "10.255.0.1", "192.168.1.77", "127.0.0.1", "2001:db8::1", "2001:db8:ffff::9", "fe80::1", "::1"]
).map(ipaddress.ip_address)
addresses = st.one_of(v4_addresses, v6_addresses, mapped_addresses, near_addresses, near_addresses.filter(
    lambda a: a.version == 4).map(lambda a: ipaddress.IPv6Address(MAPPED_PREFIX | int(a))))


def _network(version: int, value: int, prefix: int) -> IPNetwork:
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((value, prefix), strict=False)


v4_networks = st.builds(lambda v, p: _network(4, v, p), st.integers(0, 2**32 - 1), st.integers(0, 32))
v6_networks = st.builds(lambda v, p: _network(6, v, p), st.integers(0, 2**128 - 1), st.integers(0, 128))
mapped_networks = st.builds(
    lambda v, p: _network(6, MAPPED_PREFIX | v, 96 + p), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
fixed_networks = st.sampled_from(
    ["10.0.0.0/8", "192.168.1.0/24", "127.0.0.1/32", "0.0.0.0/0", "2001:db8::/32", "::/0", "::ffff:10.0.0.0/104"]
).map(ipaddress.ip_network)
networks = st.one_of(v4_networks, v6_networks, mapped_networks, fixed_networks)
rules = st.builds(
    CidrRule,
    allow=st.lists(networks, max_size=4).map(tuple),
    deny=st.lists(networks, max_size=4).map(tuple),
)


def reference_as_v4(address: IPAddress) -> IPAddress:
    if address.version == 6 and int(address) >> 32 == 0xFFFF:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def reference_net_as_v4(network: IPNetwork) -> IPNetwork:
    if network.version == 6 and network.prefixlen >= 96 and int(network.network_address) >> 32 == 0xFFFF:
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def reference_match(address: IPAddress, network: IPNetwork) -> bool:
    address, network = reference_as_v4(address), reference_net_as_v4(network)
    if address.version != network.version:
        return False
    # the definition of a prefix match, by integers (not ``in``, which the plugin uses)
    shift = network.max_prefixlen - network.prefixlen
    return int(address) >> shift == int(network.network_address) >> shift


def reference_allowed(address: IPAddress, rule: CidrRule) -> bool:
    if any(reference_match(address, n) for n in rule.deny):
        return False
    return not rule.allow or any(reference_match(address, n) for n in rule.allow)


@settings(max_examples=300, deadline=None)
@given(address=addresses, rule=rules)
def test_matches_the_reference(address, rule):
    assert address_allowed(address, rule) == reference_allowed(address, rule)
    assert (cidr_refusal(address, rule) is None) == address_allowed(address, rule)


@settings(max_examples=200, deadline=None)
@given(address=v4_addresses, rule=rules)
def test_mapped_address_is_judged_as_ipv4(address, rule):
    mapped = ipaddress.IPv6Address(MAPPED_PREFIX | int(address))
    assert address_allowed(mapped, rule) == address_allowed(address, rule)


@settings(max_examples=200, deadline=None)
@given(address=addresses, rule=rules)
def test_deny_wins_over_allow(address, rule):
    both = CidrRule(allow=rule.allow + rule.deny, deny=rule.deny)
    if any(reference_match(address, n) for n in rule.deny):
        assert not address_allowed(address, both)


@settings(max_examples=100, deadline=None)
@given(address=addresses)
def test_empty_rule_allows_everything(address):
    assert address_allowed(address, CidrRule())


def test_examples_from_the_spec():
    rule = CidrRule(allow=(ipaddress.ip_network("10.0.0.0/8"),), deny=(ipaddress.ip_network("10.9.0.0/16"),))
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), rule)
    assert not address_allowed(ipaddress.ip_address("10.9.2.3"), rule)
    assert not address_allowed(ipaddress.ip_address("11.0.0.1"), rule)
    assert address_allowed(ipaddress.ip_address("::ffff:10.1.2.3"), rule)
    assert not address_allowed(ipaddress.ip_address("::ffff:10.9.0.1"), rule)
    assert not address_allowed(ipaddress.ip_address("2001:db8::1"), rule)

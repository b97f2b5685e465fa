"""PCP (RFC 6887) and NAT-PMP (RFC 6886) codecs: a router's answer built from the RFC layout
decodes to what it says; any other bytes are refused with the codec's error, never another."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connet_core.portmap import natpmp, pcp

ports = st.integers(1, 65535)
lifetimes = st.integers(0, 2**32 - 1)
nonces = st.binary(min_size=12, max_size=12)
ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))


def pcp_answer(nonce: bytes, internal: int, external: int, address: ipaddress.IPv4Address, lifetime: int,
               epoch: int = 7, result: int = 0, version: int = 2) -> bytes:
    """A router's MAP answer, byte by byte from RFC 6887 sections 7.2 and 11.1."""
    mapped = b"\0" * 10 + b"\xff\xff" + address.packed
    return (struct.pack("!BBBBII", version, 0x81, 0, result, lifetime, epoch) + b"\0" * 12
            + nonce + struct.pack("!B3xHH", 17, internal, external) + mapped)


@given(nonces, ports, ports, ipv4, lifetimes)
def test_pcp_answer_decodes(nonce: bytes, internal: int, external: int, address: ipaddress.IPv4Address, lifetime: int) -> None:
    mapping = pcp.parse_map(pcp_answer(nonce, internal, external, address, lifetime), nonce, internal)
    assert (mapping.internal_port, mapping.external_port, mapping.external_address, mapping.lifetime) == (
        internal, external, address, lifetime)


@given(nonces, nonces, ports)
def test_pcp_answer_to_another_request_is_refused(nonce: bytes, other: bytes, internal: int) -> None:
    answer = pcp_answer(other, internal, 5000, ipaddress.IPv4Address("203.0.113.5"), 60)
    if other == nonce:
        assert pcp.parse_map(answer, nonce, internal).external_port == 5000
    else:
        with pytest.raises(pcp.PcpError, match="nonce"):
            pcp.parse_map(answer, nonce, internal)


@given(nonces, ipv4, ports, lifetimes, st.integers(0, 65535))
def test_pcp_request_layout(nonce: bytes, client: ipaddress.IPv4Address, internal: int, lifetime: int, suggested: int) -> None:
    data = pcp.map_request(client, nonce, internal, lifetime, suggested)
    assert len(data) == 60
    version, opcode, _, got_lifetime = struct.unpack_from("!BBHI", data)
    assert (version, opcode, got_lifetime) == (2, 1, lifetime)
    assert ipaddress.IPv6Address(data[8:24]).ipv4_mapped == client
    assert data[24:36] == nonce
    assert struct.unpack_from("!B3xHH", data, 36) == (17, internal, suggested)


def test_pcp_refusals_and_old_servers() -> None:
    nonce = bytes(12)
    with pytest.raises(pcp.UnsupportedVersion):  # a NAT-PMP-only router answers with version 0
        pcp.parse_map(struct.pack("!BBHI", 0, 129, 1, 0) + bytes(56), nonce, 1)
    with pytest.raises(pcp.PcpError, match="not authorized"):
        pcp.parse_map(pcp_answer(nonce, 1, 1, ipaddress.IPv4Address(1), 0, result=2), nonce, 1)


@given(st.binary(max_size=80), nonces, ports)
def test_pcp_any_bytes_decode_or_fail_cleanly(data: bytes, nonce: bytes, internal: int) -> None:
    try:
        pcp.parse_map(data, nonce, internal)
    except pcp.PcpError:
        pass  # refused as a PcpError: the only way it may fail


def natpmp_map_answer(internal: int, external: int, lifetime: int, result: int = 0) -> bytes:
    return struct.pack("!BBHIHHI", 0, 129, result, 99, internal, external, lifetime)


@given(ports, ports, lifetimes)
def test_natpmp_map_answer_decodes(internal: int, external: int, lifetime: int) -> None:
    mapping = natpmp.parse_map(natpmp_map_answer(internal, external, lifetime), internal)
    assert (mapping.internal_port, mapping.external_port, mapping.lifetime, mapping.epoch) == (internal, external, lifetime, 99)


@given(ipv4)
def test_natpmp_external_address_decodes(address: ipaddress.IPv4Address) -> None:
    answer = struct.pack("!BBHI", 0, 128, 0, 5) + address.packed
    assert natpmp.parse_external_address(answer).address == address
    assert natpmp.external_address_request() == b"\0\0"


@given(ports, st.integers(0, 65535), lifetimes)
def test_natpmp_request_layout(internal: int, suggested: int, lifetime: int) -> None:
    assert struct.unpack("!BBHHHI", natpmp.map_request(internal, suggested, lifetime)) == (0, 1, 0, internal, suggested, lifetime)


@given(st.binary(max_size=24), ports)
def test_natpmp_any_bytes_decode_or_fail_cleanly(data: bytes, internal: int) -> None:
    for parse in (lambda: natpmp.parse_map(data, internal), lambda: natpmp.parse_external_address(data)):
        try:
            parse()
        except natpmp.NatPmpError:
            pass


def test_natpmp_refusal_names_the_reason() -> None:
    with pytest.raises(natpmp.NatPmpError, match="out of resources"):
        natpmp.parse_map(natpmp_map_answer(1, 1, 1, result=4), 1)

"""The PROXY protocol header bytes (HAProxy's proxy-protocol.txt), checked field by field."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from connet_core.model import HostPort
from connet_core.proxy_protocol import V2_SIGNATURE, header, parse_addr


def _parse_v2(data: bytes) -> tuple[int, int, bytes]:
    assert data[:12] == V2_SIGNATURE
    command, family, length = struct.unpack("!BBH", data[12:16])
    body = data[16:]
    assert len(body) == length
    return command, family, body


def test_v1_ipv4() -> None:
    assert header("v1", HostPort("192.0.2.7", 51000), HostPort("127.0.0.1", 8000)) == \
        b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 8000\r\n"


def test_v1_ipv6_and_a_mapped_ipv4_client() -> None:
    assert header("v1", HostPort("2001:db8::1", 4000), HostPort("::1", 80)) == b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n"
    # a dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d: the header says TCP4
    assert header("v1", HostPort("::ffff:10.1.2.3", 5), HostPort("::ffff:127.0.0.1", 80)) == \
        b"PROXY TCP4 10.1.2.3 127.0.0.1 5 80\r\n"


def test_mixed_families_keep_the_client() -> None:
    assert header("v1", HostPort("10.0.0.1", 9), HostPort("::1", 80)) == b"PROXY TCP4 10.0.0.1 0.0.0.0 9 0\r\n"


@pytest.mark.parametrize("client", [None, HostPort("not-an-ip", 1)])
def test_unknown_client(client: HostPort | None) -> None:
    assert header("v1", client, None) == b"PROXY UNKNOWN\r\n"
    command, family, body = _parse_v2(header("v2", client, None))
    assert (command, family, body) == (0x20, 0, b"")


def test_v2_ipv4_and_ipv6() -> None:
    command, family, body = _parse_v2(header("v2", HostPort("192.0.2.7", 51000), HostPort("127.0.0.1", 8000)))
    assert (command, family) == (0x21, 0x11)
    assert body == ipaddress.ip_address("192.0.2.7").packed + ipaddress.ip_address("127.0.0.1").packed + \
        struct.pack("!HH", 51000, 8000)
    command, family, body = _parse_v2(header("v2", HostPort("2001:db8::1", 4000), HostPort("::1", 80)))
    assert (command, family, len(body)) == (0x21, 0x21, 36)
    assert body[:16] == ipaddress.ip_address("2001:db8::1").packed
    assert body[32:] == struct.pack("!HH", 4000, 80)


def test_unknown_version_is_a_bug() -> None:
    with pytest.raises(ValueError):
        header("v3", None, None)


def test_parse_addr_never_raises() -> None:
    assert parse_addr("") is None
    assert parse_addr("garbage") is None
    assert parse_addr("[::1]:80") == HostPort("::1", 80)
    assert parse_addr("1.2.3.4:5") == HostPort("1.2.3.4", 5)

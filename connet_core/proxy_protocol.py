"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2) a destination
writes to its service before the tunneled bytes, so the service sees the address of the
client that connected at the source instead of the destination's own. Sans-I/O: addresses
in, bytes out."""

from __future__ import annotations

import ipaddress
import struct

from connet_core.model import HostPort

VERSIONS = ("v1", "v2")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL: no addresses follow
_V2_TCP4 = 0x11
_V2_TCP6 = 0x21

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:a.b.c.d from a dual-stack listener: the client is IPv4
    return ip


def _pair(client: HostPort | None, server: HostPort | None) -> tuple[IPAddress, int, IPAddress, int] | None:
    """Both ends as addresses of one family, or None when the client is not known."""
    if client is None:
        return None
    src = _ip(client.host)
    if src is None:
        return None
    dst = _ip(server.host) if server is not None else None
    if server is None or dst is None or dst.version != src.version:
        # the header needs one family; where the client reached the source is secondary
        return src, client.port, ipaddress.ip_address(0 if src.version == 4 else "::"), 0
    return src, client.port, dst, server.port


def header(version: str, client: HostPort | None, server: HostPort | None) -> bytes:
    """The header for a connection from ``client`` to ``server`` (where the client connected
    at the source). A client that is not known (an older source sends none) gets the
    UNKNOWN (v1) or LOCAL (v2) form: the service then uses the connection's own address."""
    pair = _pair(client, server)
    if version == "v1":
        if pair is None:
            return b"PROXY UNKNOWN\r\n"
        src, sport, dst, dport = pair
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")
    if version != "v2":
        raise ValueError(f"unknown PROXY protocol version {version!r}")
    if pair is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0, 0)
    src, sport, dst, dport = pair
    body = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    family = _V2_TCP4 if src.version == 4 else _V2_TCP6
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


def parse_addr(text: str) -> HostPort | None:
    """A host:port from a stream request, or None if absent or malformed (never an error:
    the header then says UNKNOWN)."""
    if not text:
        return None
    try:
        return HostPort.parse(text)
    except ValueError:
        return None

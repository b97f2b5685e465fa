"""PCP (RFC 6887) MAP requests and answers for one UDP mapping.

Sans-I/O. A PCP server shares NAT-PMP's port (5351) and answers a NAT-PMP-only server's
"unsupported version" with a NAT-PMP header, which :func:`parse_map` reports as
:class:`UnsupportedVersion` so the caller falls back to NAT-PMP. Addresses are carried as
16 bytes (IPv4 as ::ffff:a.b.c.d). The nonce ties an answer to our request (a forged answer
must guess it).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

PORT = 5351
VERSION = 2
OP_MAP = 1
RESPONSE_BIT = 0x80
PROTO_UDP = 17
HEADER = struct.Struct("!BBHI16s")  # version, R|opcode, reserved, lifetime, client address
MAP_BODY = struct.Struct("!12sB3xHH16s")  # nonce, protocol, internal port, external port, address
ANSWER_HEADER = struct.Struct("!BBBBII12x")  # version, R|opcode, reserved, result, lifetime, epoch
SIZE = HEADER.size + MAP_BODY.size  # 60, requests and answers alike

RESULTS = {
    0: "success", 1: "unsupported version", 2: "not authorized", 3: "malformed request",
    4: "unsupported opcode", 5: "unsupported option", 6: "malformed option", 7: "network failure",
    8: "no resources", 9: "unsupported protocol", 10: "user exceeded quota",
    11: "cannot provide external", 12: "address mismatch", 13: "excessive remote peers",
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PcpError(ValueError):
    """An answer that is not a well-formed answer to our request, or a refusal."""


class UnsupportedVersion(PcpError):
    """The server speaks only an older version (NAT-PMP is version 0)."""


@dataclass(frozen=True, slots=True)
class Mapping:
    epoch: int
    internal_port: int
    external_port: int
    external_address: IPAddress
    lifetime: int  # seconds; 0 answers a delete


def _as16(address: IPAddress) -> bytes:
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed).packed
    return address.packed


def _from16(data: bytes) -> IPAddress:
    v6 = ipaddress.IPv6Address(data)
    return v6.ipv4_mapped or v6


def map_request(client: IPAddress, nonce: bytes, internal_port: int, lifetime: int,
                suggested_port: int = 0, suggested_address: IPAddress | None = None) -> bytes:
    """Map UDP ``internal_port`` of ``client`` (our address as the server sees it); lifetime 0 deletes."""
    if len(nonce) != 12:
        raise ValueError("the nonce is 12 bytes")
    if not 0 < internal_port < 65536 or not 0 <= suggested_port < 65536 or not 0 <= lifetime < 2**32:
        raise ValueError("port or lifetime out of range")
    if suggested_address is None:  # "any": the all-zeros IPv4 address
        suggested_address = ipaddress.IPv4Address(0) if isinstance(client, ipaddress.IPv4Address) else ipaddress.IPv6Address(0)
    return HEADER.pack(VERSION, OP_MAP, 0, lifetime, _as16(client)) + MAP_BODY.pack(
        nonce, PROTO_UDP, internal_port, suggested_port, _as16(suggested_address))


def parse_map(data: bytes, nonce: bytes, internal_port: int) -> Mapping:
    """The answer to our MAP request with ``nonce``; anything else raises PcpError."""
    if len(data) >= 2 and data[0] != VERSION:
        raise UnsupportedVersion(f"server answered version {data[0]}")
    if len(data) < SIZE:
        raise PcpError(f"answer of {len(data)} bytes is too short")
    version, op, _, result, lifetime, epoch = ANSWER_HEADER.unpack_from(data)
    if op != RESPONSE_BIT | OP_MAP:
        raise PcpError(f"not a MAP answer (opcode byte {op:#x})")
    if result == 1:
        raise UnsupportedVersion("server does not speak PCP version 2")
    if result != 0:
        raise PcpError(f"refused: {RESULTS.get(result, f'result {result}')}")
    got_nonce, proto, internal, external, address = MAP_BODY.unpack_from(data, HEADER.size)
    if got_nonce != nonce:
        raise PcpError("answer with another nonce")
    if proto != PROTO_UDP or internal != internal_port:
        raise PcpError(f"answer for protocol {proto} port {internal}, not UDP {internal_port}")
    return Mapping(epoch, internal, external, _from16(address), lifetime)

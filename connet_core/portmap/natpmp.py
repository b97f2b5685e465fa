"""NAT-PMP (RFC 6886) messages for one UDP mapping: encode the requests, decode the answers.

Sans-I/O: bytes in, values out. A NAT-PMP server listens on the gateway's UDP port 5351 and
maps the *source address* of the request; the internal port is named in the request.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

PORT = 5351
VERSION = 0
OP_EXTERNAL_ADDRESS = 0
OP_MAP_UDP = 1
RESPONSE = 128  # added to the opcode in an answer

RESULTS = {
    0: "success",
    1: "unsupported version",
    2: "not authorized/refused",
    3: "network failure",
    4: "out of resources",
    5: "unsupported opcode",
}


class NatPmpError(ValueError):
    """An answer that is not a well-formed answer to our request, or a refusal."""


@dataclass(frozen=True, slots=True)
class ExternalAddress:
    epoch: int
    address: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class Mapping:
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int  # seconds; 0 answers a delete


def external_address_request() -> bytes:
    return struct.pack("!BB", VERSION, OP_EXTERNAL_ADDRESS)


def map_request(internal_port: int, suggested_port: int, lifetime: int) -> bytes:
    """A UDP mapping of ``internal_port``; lifetime 0 (and suggested 0) deletes it."""
    if not 0 < internal_port < 65536 or not 0 <= suggested_port < 65536 or not 0 <= lifetime < 2**32:
        raise ValueError("port or lifetime out of range")
    return struct.pack("!BBHHHI", VERSION, OP_MAP_UDP, 0, internal_port, suggested_port, lifetime)


def _header(data: bytes, opcode: int, size: int) -> tuple[int, int]:
    if len(data) < 4:
        raise NatPmpError(f"answer of {len(data)} bytes is too short")
    version, op, result = struct.unpack_from("!BBH", data)
    if version != VERSION:
        raise NatPmpError(f"answer of version {version}")
    if op != RESPONSE + opcode:
        raise NatPmpError(f"answer to opcode {op - RESPONSE if op >= RESPONSE else op}, not {opcode}")
    if result != 0:
        raise NatPmpError(f"refused: {RESULTS.get(result, f'result {result}')}")
    if len(data) < size:
        raise NatPmpError(f"answer of {len(data)} bytes is too short")
    (epoch,) = struct.unpack_from("!I", data, 4)
    return result, epoch


def parse_external_address(data: bytes) -> ExternalAddress:
    _, epoch = _header(data, OP_EXTERNAL_ADDRESS, 12)
    return ExternalAddress(epoch, ipaddress.IPv4Address(data[8:12]))


def parse_map(data: bytes, internal_port: int) -> Mapping:
    """The answer to ``map_request(internal_port, ...)``; an answer for another port is an error."""
    _, epoch = _header(data, OP_MAP_UDP, 16)
    internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
    if internal != internal_port:
        raise NatPmpError(f"answer for internal port {internal}, not {internal_port}")
    return Mapping(epoch, internal, external, lifetime)

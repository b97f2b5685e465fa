"""A minimal STUN server for the NAT lab (RFC 5389 Binding, RFC 5780 CHANGE-REQUEST and
OTHER-ADDRESS): miniupnpd refuses to map ports on a WAN address in a documentation range
unless STUN tells it the address is public and unfiltered (``ext_perform_stun``), so the
mapping routers of the lab ask this one, in the server namespace, on two addresses.

    python stunserver.py IP1 IP2 PORT1 PORT2
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys

MAGIC = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
CHANGE_REQUEST = 0x0003
MAPPED_ADDRESS = 0x0001
XOR_MAPPED_ADDRESS = 0x0020
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C
CHANGE_IP = 0x04
CHANGE_PORT = 0x02


def _address(kind: int, ip: str, port: int, xor_with: bytes | None = None) -> bytes:
    raw_ip, raw_port = socket.inet_aton(ip), port
    if xor_with is not None:
        raw_port ^= MAGIC >> 16
        raw_ip = bytes(a ^ b for a, b in zip(raw_ip, xor_with[:4]))
    return struct.pack("!HHBBH", kind, 8, 0, 1, raw_port) + raw_ip


def answer(request: bytes, client: tuple[str, int], origin: tuple[str, int], other: tuple[str, int]) -> tuple[bytes, int] | None:
    """The response to a Binding request, and its CHANGE-REQUEST flags; None for anything else."""
    if len(request) < 20:
        return None
    kind, length, cookie = struct.unpack_from("!HHI", request)
    if kind != BINDING_REQUEST or 20 + length > len(request):
        return None
    flags, offset = 0, 20
    while offset + 4 <= 20 + length:
        attr, size = struct.unpack_from("!HH", request, offset)
        if attr == CHANGE_REQUEST and size == 4:
            (flags,) = struct.unpack_from("!I", request, offset + 4)
        offset += 4 + size + (-size % 4)
    body = (_address(MAPPED_ADDRESS, *client) + _address(XOR_MAPPED_ADDRESS, *client, xor_with=struct.pack("!I", MAGIC))
            + _address(RESPONSE_ORIGIN, *origin) + _address(OTHER_ADDRESS, *other))
    return struct.pack("!HHI", BINDING_RESPONSE, len(body), cookie) + request[8:20] + body, flags


def main(ip1: str, ip2: str, port1: int, port2: int) -> None:
    sockets: dict[tuple[str, int], socket.socket] = {}
    for ip in (ip1, ip2):
        for port in (port1, port2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ip, port))
            sockets[(ip, port)] = sock
    selector = selectors.DefaultSelector()
    for key, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, key)
    print(f"stun listening on {ip1}:{port1} and {ip2}:{port2}", flush=True)
    while True:
        for event, _ in selector.select():
            (ip, port) = event.data
            data, client = event.fileobj.recvfrom(2048)  # type: ignore[union-attr]
            other = (ip2 if ip == ip1 else ip1, port2 if port == port1 else port1)
            result = answer(data, client, (ip, port), other)
            if result is None:
                continue
            flags = result[1]
            reply_ip = other[0] if flags & CHANGE_IP else ip
            reply_port = other[1] if flags & CHANGE_PORT else port
            origin = (reply_ip, reply_port)
            response, _ = answer(data, client, origin, other)  # type: ignore[misc]
            sockets[origin].sendto(response, client)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

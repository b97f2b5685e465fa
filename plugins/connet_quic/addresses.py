"""Addresses of the endpoint's UDP socket and its peers, and the socket itself.

Addresses are kept in one canonical form, ``(host, port)`` with IPv4-mapped IPv6 folded to
IPv4, because a client-role connection drops datagrams from any address but the one it
dialed, and a dual-stack socket reports IPv4 peers as ``::ffff:a.b.c.d``.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from connet_core.errors import DialError, TransportError
from connet_core.model import HostPort

from connet_quic._udp import size_buffers

Address = tuple[str, int]  # canonical: IPv4-mapped folded to IPv4, no flow info / scope tuple fields


def canonical(raw: Any) -> Address:
    host = raw[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return (host, raw[1])


@dataclass(frozen=True)
class SocketFamily:
    """What a bound socket can reach: its family, and IPv4 too when it is dual stack."""

    family: int = socket.AF_INET
    dual_stack: bool = False

    def reaches(self, family: int) -> bool:
        return family == self.family or (family == socket.AF_INET and self.dual_stack)

    def socket_address(self, addr: Address) -> Address:
        """The address to send to: IPv4 peers as IPv4-mapped on an IPv6 socket."""
        if self.family == socket.AF_INET6 and ":" not in addr[0]:
            return ("::ffff:" + addr[0], addr[1])
        return addr


async def bind_socket(loop: asyncio.AbstractEventLoop, address: HostPort) -> tuple[socket.socket, SocketFamily]:
    """A non-blocking UDP socket bound to ``address`` (empty host: every interface, dual
    stack where IPv6 exists), with its buffers sized. Raises TransportError."""
    if address.host == "":
        try:
            sock: socket.socket | None = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:
            sock = None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", address.port))
            except OSError:
                sock.close()
                sock = None
            else:
                kind = SocketFamily(socket.AF_INET6, dual_stack=True)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _bind_or_close(sock, ("0.0.0.0", address.port), address)
            kind = SocketFamily(socket.AF_INET)
    else:
        try:
            infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise TransportError(f"cannot bind {address}: {exc.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        dual_stack = False
        if family == socket.AF_INET6 and sockaddr[0] == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            dual_stack = True
        kind = SocketFamily(family, dual_stack)
        _bind_or_close(sock, sockaddr, address)
    size_buffers(sock)  # warns once if the kernel grants less (the sysctls to raise)
    sock.setblocking(False)
    return sock, kind


def _bind_or_close(sock: socket.socket, sockaddr: Any, address: HostPort) -> None:
    try:
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot bind UDP {address}: {exc.strerror or exc}") from None


async def resolve(loop: asyncio.AbstractEventLoop, address: HostPort, family: SocketFamily, local: HostPort) -> Address:
    """The canonical address to dial ``address`` at from a socket of ``family``. Raises DialError."""
    if not address.host:
        raise DialError(f"dial {address}: no host to dial")
    try:
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise DialError(f"dial {address}: cannot resolve {address.host!r}: {exc.strerror}") from None
    for found, _, _, _, sockaddr in infos:
        if family.reaches(found):
            return canonical(sockaddr)
    raise DialError(f"dial {address}: no address of a family this socket can reach ({local})")

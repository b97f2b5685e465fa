"""The control instances a client or relay may talk to, tried in turn (docs/scaling.md).

One address behaves as before: dialed until it answers. Several (``server-addr`` /
``control-addr`` as a list, or one host name with several addresses of one family) are
dialed one after another; after a session is lost the next dial starts at the following
instance, so a client leaves a dead or cut-off instance at once instead of waiting on it.

A client's TCP addresses (``server-tcp-addr``, QUIC over TLS-over-TCP where UDP is
blocked) pair with the UDP ones simply: one TCP address serves every UDP address (one TCP
front for all instances); several pair by position (the n-th UDP address's instance is
reachable over TCP at the n-th TCP address; the config rejects other counts). A name that
stands for several instances keeps its one TCP partner for each of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Awaitable, Callable

from connet_core.component import Backoff
from connet_core.errors import DialError
from connet_core.model import HostPort
from connet_core.transport import Connection, Endpoint, Trust


# how to dial one instance: (UDP address, its TCP partner or None, trust, timeout); the
# client passes its Carrier's dial (UDP, or TCP where UDP is blocked)
DialOne = Callable[[HostPort, "HostPort | None", Trust, float], Awaitable[Connection]]


def tcp_partners(addrs: tuple[HostPort, ...], tcp_addrs: tuple[HostPort, ...]) -> tuple[HostPort | None, ...]:
    """The TCP address of each UDP address (see the module): none, one for all, or by position."""
    if not tcp_addrs:
        return (None,) * len(addrs)
    if len(tcp_addrs) == 1:
        return tcp_addrs * len(addrs)
    if len(tcp_addrs) != len(addrs):
        raise ValueError(f"{len(tcp_addrs)} TCP addresses for {len(addrs)} UDP addresses: give one, or one per address")
    return tcp_addrs


class ControlAddresses:
    def __init__(self, addrs: tuple[HostPort, ...], *, name: str, name_set: bool, cafile: Path | None,
                 tcp_addrs: tuple[HostPort, ...] = ()) -> None:
        self.addrs = addrs
        self._tcp = dict(zip(addrs, tcp_partners(addrs, tcp_addrs)))
        self._name = name
        self._name_set = name_set or len(addrs) == 1  # one address: its (default) name as before
        self._cafile = cafile
        self._next = 0
        self.current: HostPort | None = None  # the instance of the session that is up
        self.current_trust: Trust | None = None  # and how its certificate was checked

    def _trust(self, configured: HostPort) -> Trust:
        return Trust(server_name=self._name if self._name_set else configured.host, cafile=self._cafile)

    def tcp_addr(self, configured: HostPort) -> HostPort | None:
        """The TCP partner of a configured address (None: none)."""
        return self._tcp.get(configured)

    async def candidates(self) -> list[tuple[HostPort, HostPort]]:
        """(address to dial, the configured address it came from): a host name that resolves
        to several addresses of one family stands for several instances."""
        out: list[tuple[HostPort, HostPort]] = []
        for addr in self.addrs:
            out.extend((found, addr) for found in await _expand(addr))
        return out

    async def dial(self, endpoint: Endpoint, *, alpn: str, timeout: float, backoff: Backoff,
                   logger: logging.Logger, what: str,
                   hint: Callable[[DialError], str] | None = None, dial: DialOne | None = None) -> Connection:
        """Dial the instances in turn until one is up, waiting ``backoff`` after each round.
        A failure is a warning when it differs from the one before, else a debug line.
        ``dial``: how to dial one instance instead of ``endpoint.dial`` (the client's Carrier)."""
        last: dict[HostPort, str] = {}
        while True:
            candidates = await self.candidates()
            for step in range(len(candidates)):
                index = (self._next + step) % len(candidates)
                address, configured = candidates[index]
                trust = self._trust(configured)
                try:
                    if dial is not None:
                        conn = await dial(address, self.tcp_addr(configured), trust, timeout)
                    else:
                        conn = await endpoint.dial(address, alpn=alpn, trust=trust, timeout=timeout)
                except DialError as exc:
                    level = logging.DEBUG if last.get(address) == str(exc) else logging.WARNING
                    last[address] = str(exc)
                    logger.log(level, "cannot reach %s %s: %s%s; retrying", what, address, exc,
                               hint(exc) if hint else "")
                    continue
                self._next = (index + 1) % len(candidates)  # after a loss, start at the next one
                self.current = address
                self.current_trust = trust
                return conn
            await asyncio.sleep(backoff.next_delay())


async def _expand(addr: HostPort) -> list[HostPort]:
    """``addr`` itself, or for a name with several addresses of one family, each of them."""
    try:
        ipaddress.ip_address(addr.host)
        return [addr]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(addr.host, addr.port, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return [addr]  # the dial reports the name that does not resolve
    by_family: dict[int, list[str]] = {}
    for family, _, _, _, sockaddr in infos:
        found = by_family.setdefault(family, [])
        if sockaddr[0] not in found:
            found.append(sockaddr[0])
    several = [ips for ips in by_family.values() if len(ips) > 1]
    # "localhost" (one IPv4, one IPv6) stays a name: the transport picks the reachable one
    return [HostPort(ip, addr.port) for ip in several[0]] if several else [addr]

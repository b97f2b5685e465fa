"""The control instances a client or relay may talk to, tried in turn (docs/scaling.md).

One address behaves as before: dialed until it answers. Several (``server-addr`` /
``control-addr`` as a list, or one host name with several addresses of one family) are
dialed one after another; after a session is lost the next dial starts at the following
instance, so a client leaves a dead or cut-off instance at once instead of waiting on it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Callable

from connet_core.component import Backoff
from connet_core.errors import DialError
from connet_core.model import HostPort
from connet_core.transport import Connection, Endpoint, Trust


class ControlAddresses:
    def __init__(self, addrs: tuple[HostPort, ...], *, name: str, name_set: bool, cafile: Path | None) -> None:
        self.addrs = addrs
        self._name = name
        self._name_set = name_set or len(addrs) == 1  # one address: its (default) name as before
        self._cafile = cafile
        self._next = 0
        self.current: HostPort | None = None  # the instance of the session that is up

    def _trust(self, configured: HostPort) -> Trust:
        return Trust(server_name=self._name if self._name_set else configured.host, cafile=self._cafile)

    async def candidates(self) -> list[tuple[HostPort, HostPort]]:
        """(address to dial, the configured address it came from): a host name that resolves
        to several addresses of one family stands for several instances."""
        out: list[tuple[HostPort, HostPort]] = []
        for addr in self.addrs:
            out.extend((found, addr) for found in await _expand(addr))
        return out

    async def dial(self, endpoint: Endpoint, *, alpn: str, timeout: float, backoff: Backoff,
                   logger: logging.Logger, what: str,
                   hint: Callable[[DialError], str] | None = None) -> Connection:
        """Dial the instances in turn until one is up, waiting ``backoff`` after each round.
        A failure is a warning when it differs from the one before, else a debug line."""
        last: dict[HostPort, str] = {}
        while True:
            candidates = await self.candidates()
            for step in range(len(candidates)):
                index = (self._next + step) % len(candidates)
                address, configured = candidates[index]
                try:
                    conn = await endpoint.dial(address, alpn=alpn, trust=self._trust(configured), timeout=timeout)
                except DialError as exc:
                    level = logging.DEBUG if last.get(address) == str(exc) else logging.WARNING
                    last[address] = str(exc)
                    logger.log(level, "cannot reach %s %s: %s%s; retrying", what, address, exc,
                               hint(exc) if hint else "")
                    continue
                self._next = (index + 1) % len(candidates)  # after a loss, start at the next one
                self.current = address
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

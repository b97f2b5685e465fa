"""Which way the client's legs to control and to relays go: UDP, or QUIC over TLS-over-TCP
where UDP is blocked (``[client] udp``, ``server-tcp-addr``; the relays' TCP addresses
come from control). Only this client's legs move: its peers and the relay's other clients
keep their UDP.

``udp = "auto"``: a dial tries UDP first; when no QUIC handshake completes within
``UDP_FALLBACK_AFTER`` seconds it dials the TCP address instead. After such a fallback the
next legs (the relays control offers next) go to TCP at once instead of waiting again, until
a UDP handshake succeeds somewhere (a network that blocks UDP blocks all of it). While a leg runs over TCP,
UDP is tried again every ``UDP_RETRY_INTERVAL`` seconds; once a handshake succeeds the leg
moves back (a relay leg only while it carries no stream, so no tunneled connection is cut).
``udp = "never"``: TCP at once, for networks known to block UDP.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from connet_core.errors import DialError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import Connection, Endpoint, Trust

log = logging.getLogger("connet.client")

UDP_FALLBACK_AFTER = 3.0  # seconds a UDP handshake gets before "auto" dials over TCP
UDP_RETRY_INTERVAL = 30.0  # seconds between tries of UDP while a leg is on TCP
MOVED_BACK = "UDP works again: moving back from TCP"


def carrier_of(conn: Connection | None) -> str | None:
    """``"udp"`` or ``"tcp"`` (an optional attribute of a transport's connections)."""
    return None if conn is None else getattr(conn, "carrier", "udp")


class Carrier:
    """Dials one leg the way ``udp`` says; one per client (it remembers what it told the log)."""

    def __init__(self, endpoint: Endpoint, udp: str) -> None:
        self._endpoint = endpoint
        self.mode = udp
        self._said_fallback: set[HostPort] = set()
        self.udp_blocked = False  # the last UDP dial that had a TCP alternative failed

    async def dial(self, udp_addr: HostPort, tcp_addr: HostPort | None, *, alpn: str, trust: Trust,
                   timeout: float) -> Connection:
        """A connection to ``udp_addr``, or to ``tcp_addr`` over TCP (see the module). Raises DialError."""
        dial_tcp = getattr(self._endpoint, "dial_tcp", None)
        if tcp_addr is not None and dial_tcp is None:
            raise DialError(f"dial {tcp_addr} over TCP: the transport cannot carry QUIC over TCP")
        if self.mode == "never":
            if tcp_addr is None:
                raise DialError(f"{udp_addr} offers no TCP address, and udp = \"never\"")
            return await dial_tcp(tcp_addr, alpn=alpn, trust=trust, timeout=timeout)
        if tcp_addr is None:
            return await self._endpoint.dial(udp_addr, alpn=alpn, trust=trust, timeout=timeout)
        if self.udp_blocked:  # UDP failed just now elsewhere: no second wait (back_to_udp tries it)
            try:
                return await dial_tcp(tcp_addr, alpn=alpn, trust=trust, timeout=timeout)
            except DialError:
                pass  # TCP fails too: try UDP after all
        try:
            conn = await self._endpoint.dial(udp_addr, alpn=alpn, trust=trust, timeout=min(timeout, UDP_FALLBACK_AFTER))
        except DialError as udp_error:
            try:
                conn = await dial_tcp(tcp_addr, alpn=alpn, trust=trust, timeout=timeout)
            except DialError as tcp_error:
                raise DialError(f"{udp_error}; over TCP: {tcp_error}") from None
            self.udp_blocked = True
            if tcp_addr not in self._said_fallback:
                self._said_fallback.add(tcp_addr)
                log.warning("UDP to %s failed (%s): using TCP %s", udp_addr, udp_error, tcp_addr,
                            extra={"event": "udp-fallback", "peer": str(tcp_addr)})
            return conn
        self._said_fallback.discard(tcp_addr)
        self.udp_blocked = False
        return conn

    async def back_to_udp(self, conn: Connection, udp_addr: HostPort, *, alpn: str, trust: Trust,
                          idle: Callable[[], bool] = lambda: True) -> None:
        """While ``conn`` runs over TCP (``udp = "auto"``): try UDP now and then; once it
        works and ``idle()`` says the leg may move, close ``conn`` (its loop redials, UDP
        first). Returns at once for a UDP leg."""
        if self.mode != "auto" or carrier_of(conn) != "tcp":
            return
        while not conn.closed:
            await asyncio.sleep(UDP_RETRY_INTERVAL)
            if not idle():
                continue
            try:
                probe = await self._endpoint.dial(udp_addr, alpn=alpn, trust=trust, timeout=UDP_FALLBACK_AFTER)
            except DialError:
                continue
            probe.close(CloseCode.OK, "probe")
            self.udp_blocked = False
            if idle():
                log.info("%s: %s", udp_addr, MOVED_BACK, extra={"event": "udp-back", "peer": str(udp_addr)})
                conn.close(CloseCode.OK, MOVED_BACK)
                return

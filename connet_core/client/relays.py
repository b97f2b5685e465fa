"""Relays: the relays control offers for our names, each with the grants it gave. One
connection per relay while it holds a grant of ours; the streams a relay brings go to
``serve_stream`` (the destinations). Whatever a relay or the network does ends one
connection, never the client."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from connet_core.client.state import (
    HANDSHAKE_STEP_TIMEOUT,
    ClientState,
    RelayLink,
    prove_over,
    role_of,
)
from connet_core.client.carrier import Carrier
from connet_core.component import RECONNECT_CEILING, Backoff, spawn
from connet_core.errors import ConnectionLost, DialError
from connet_core.model import HostPort, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import ALPN_RELAY, Hello, RelayInfo, RelaysUpdate, Welcome
from connet_core.protocol.streams import MessageStream
from connet_core.supervise import TaskGroup, attempt, close_code, contained, describe, pause
from connet_core.transport import Connection, Endpoint, Stream, Trust

log = logging.getLogger("connet.client")

ServeStream = Callable[[RelayLink, Stream], Awaitable[None]]


class Relays:
    """The relay links (``state.relays``, ``state.relays_for``)."""

    def __init__(self, state: ClientState, endpoint: Endpoint, tg: asyncio.TaskGroup, *,
                 serve_stream: ServeStream, carrier: Carrier | None = None) -> None:
        self._carrier = carrier or Carrier(endpoint, "auto")
        self._state = state
        self._endpoint = endpoint
        self._tg = tg
        self._serve_stream = serve_stream

    def update(self, update: RelaysUpdate) -> None:
        """Control's list of the relays for one name and role, with their grants."""
        state = self._state
        key = (update.name, role_of(update.role))
        fresh: dict[bytes, RelayInfo] = {}
        for info in update.relays:
            try:
                HostPort.parse(info.addr)
                if info.tcp_addr:
                    HostPort.parse(info.tcp_addr)
            except ValueError:
                log.warning("control sent a relay with a bad address %r", f"{info.addr} {info.tcp_addr}"[:80])
                continue
            fresh[certificate_hash(info.certificate)] = info
        fresh_addrs = {HostPort.parse(info.addr) for info in fresh.values()}
        for relay_hash in state.relays_for.get(key, set()) - set(fresh):
            link = state.relays.get(relay_hash)
            if link is not None:
                link.grants.pop(key, None)
                if not link.grants:
                    self._drop(relay_hash, link, replaced=link.addr in fresh_addrs)
        state.relays_for[key] = set(fresh)
        for relay_hash, info in fresh.items():
            link = state.relays.get(relay_hash)
            if link is None:
                link = state.relays[relay_hash] = RelayLink(HostPort.parse(info.addr), info.certificate)
            link.grants[key] = info.grant
            link.tcp_addr = HostPort.parse(info.tcp_addr) if info.tcp_addr else None
            link.changed.set()
            if link.task is None or link.task.done():
                link.task = spawn(self._tg, self._keep(link))

    def _drop(self, relay_hash: bytes, link: RelayLink, *, replaced: bool = False) -> None:
        # a relay offered again at its address with another certificate restarted (a server
        # without store-dir): its "connected" line says the rest, so this one is debug
        log.log(logging.DEBUG if replaced else logging.INFO, "relay %s is no longer offered%s", link.label,
                " (offered again with a new certificate: it restarted)" if replaced else "")
        del self._state.relays[relay_hash]
        if link.task is not None:
            link.task.cancel()
        if link.conn is not None:
            link.conn.close(CloseCode.OK, "relay withdrawn")

    async def _keep(self, link: RelayLink) -> None:
        """Stay connected to a relay while it holds grants of ours; serve what it sends."""
        backoff = Backoff(0.5, RECONNECT_CEILING)
        trust = Trust(pinned_der=link.certificate)
        said = False  # this outage has had its line: the retries that follow are debug lines
        while True:
            up: list[bool] = []
            with attempt() as tried:
                await self._session(link, trust, backoff, up)
            if up:
                said = False  # it was up in between: a new outage
            error = tried.error
            # One warning per outage, not per retry: a relay that restarts (with the server)
            # fails every dial until control offers it again, often with a new certificate.
            level = logging.DEBUG if said else logging.WARNING
            if isinstance(error, DialError):
                log.log(level, "cannot reach relay %s: %s; retrying", link.label, describe(error))
            elif isinstance(error, ConnectionLost):
                log.log(level, "relay %s connection closed: %s; retrying", link.label, CloseCode.describe(error.code))
            elif error is not None:
                log.log(level, "relay %s: %s; retrying", link.label, describe(error))
            said = said or error is not None
            await pause(backoff.next_delay())

    async def _session(self, link: RelayLink, trust: Trust, backoff: Backoff, up: list[bool]) -> None:
        """One connection to the relay: prove our key with the grants, then serve its
        streams and show it grants for names announced later, until something fails."""
        conn = await self._carrier.dial(link.addr, link.tcp_addr, alpn=ALPN_RELAY, trust=trust,
                                        timeout=self._state.dial_timeout)
        try:
            grants = tuple(link.grants.values())
            await prove_over(conn, self._state.identity, ALPN_RELAY, grants)
            backoff.reset()
            link.conn, link.presented = conn, set(grants)
            up.append(True)
            log.info("relay %s connected", link.label, extra={"peer": str(link.addr), "path": "relay"})
            await self._state.notify_paths()
            async with TaskGroup() as tg:
                tg.create_task(self._present_new_grants(link, conn))
                # back to UDP when it works again, between relayed streams (none is cut)
                tg.create_task(self._carrier.back_to_udp(conn, link.addr, alpn=ALPN_RELAY, trust=trust,
                                                         idle=lambda: link.active_streams == 0))
                while True:
                    stream = await conn.accept_stream()
                    spawn(tg, self._serve_stream(link, stream), f"relayed stream from {link.label}", log)
        except BaseException as exc:
            conn.close(close_code(exc), "relay link failed")  # the relay learns why (no-op if it closed)
            raise
        finally:
            if link.conn is conn:
                link.conn = None

    async def _present_new_grants(self, link: RelayLink, conn: Connection) -> None:
        """Names announced after the relay connection was made need their grants shown."""
        while True:
            await link.changed.wait()
            link.changed.clear()
            new = tuple(g for g in link.grants.values() if g not in link.presented)
            if not new:
                continue
            messages = MessageStream(await conn.open_stream())
            await messages.send(Hello(certificate=self._state.identity.certificate, grants=new))
            await messages.recv(Welcome, timeout=HANDSHAKE_STEP_TIMEOUT)
            link.presented.update(new)
            await self._state.notify_paths()

"""The client's session with the control server: authenticate, announce every destination
and source, then hand each update control sends to the part it is for. Redialed with
backoff whenever it ends; tunnels do not depend on it being up."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from connet_core.addresses import local_candidates
from connet_core.client.carrier import MOVED_BACK, Carrier, carrier_of
from connet_core.client.birthday_probe import own_nat
from connet_core.client.state import HANDSHAKE_STEP_TIMEOUT, ClientState, role_of
from connet_core.component import RECONNECT_CEILING, Backoff
from connet_core.control_addresses import ControlAddresses
from connet_core.config import ClientSettings
from connet_core.errors import ConnectionLost, DialError, ProtocolError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    Announce,
    AnnounceRefused,
    Authenticate,
    Authenticated,
    PeersUpdate,
    RelaysUpdate,
)
from connet_core.protocol.streams import MessageStream
from connet_core.supervise import TaskGroup, attempt, close_code, describe, pause
from connet_core.transport import Connection, Endpoint, Trust

log = logging.getLogger("connet.client")

CONTROL_DIAL_TIMEOUT = 5.0


class ControlLink:
    """Keeps the control session up; ``on_peers`` and ``on_relays`` take its news."""

    def __init__(
        self, settings: ClientSettings, state: ClientState, endpoint: Endpoint, *,
        on_peers: Callable[[PeersUpdate], Awaitable[None]], on_relays: Callable[[RelaysUpdate], None],
        carrier: Carrier | None = None,
    ) -> None:
        self._settings = settings
        self._carrier = carrier or Carrier(endpoint, settings.udp)
        self._state = state
        self._endpoint = endpoint
        self._on_peers = on_peers
        self._on_relays = on_relays
        self._reconnect_id = b""  # from the last Authenticated
        self.addresses = ControlAddresses(settings.server_addrs or (settings.server_addr,), name=settings.server_name,
                                          name_set=settings.server_name_set, cafile=settings.server_cas,
                                          tcp_addrs=settings.server_tcp_addrs or _one(settings.server_tcp_addr))

    def _announcements(self) -> list[Announce]:
        addresses = tuple(self._direct_candidates())
        certificate = self._state.identity.certificate
        nat = self._nat()
        return [
            Announce(e.name, e.role.value, e.route.value, certificate, addresses, nat)
            for e in (*self._settings.destinations, *self._settings.sources)
        ]

    def _nat(self) -> str:
        return own_nat(self._state, self._endpoint.local_address.port)

    def _direct_candidates(self) -> list[str]:
        """Where peers may dial us, besides the address control observes: the router's port
        mapping (when one is up) and the local addresses."""
        mapping = self._state.port_mapping
        mapped = [str(mapping.external)] if mapping is not None else []
        return mapped + self._local_candidates()

    def _local_candidates(self) -> list[str]:
        bound = self._endpoint.local_address
        ip = bound.ip()
        if ip is not None and not ip.is_unspecified:
            return [str(bound)]  # bound to one address: nothing else reaches this socket
        server_addr = self._settings.server_addr
        server_ip = server_addr.ip()
        # on one machine (tests, demos) loopback is a real path; across machines it is not
        loopback = (server_ip is not None and server_ip.is_loopback) or server_addr.host == "localhost"
        return local_candidates(bound.port, include_loopback=loopback)

    async def run(self) -> None:
        unreachable = Backoff(0.5, RECONNECT_CEILING)
        refused = Backoff(5.0, 60.0)  # a refused token or address will not fix itself soon
        state = self._state
        timeout = self._settings.handshake_idle_timeout or CONTROL_DIAL_TIMEOUT

        def dial(udp_addr: HostPort, tcp_addr: HostPort | None, trust: Trust, timeout: float) -> Awaitable[Connection]:
            return self._carrier.dial(udp_addr, tcp_addr, alpn=ALPN_CONTROL, trust=trust, timeout=timeout)

        while True:
            conn = await self.addresses.dial(self._endpoint, alpn=ALPN_CONTROL, timeout=timeout,
                                             backoff=unreachable, logger=log, what="control server",
                                             hint=self._trust_hint, dial=dial)
            state.control_carrier = carrier_of(conn)
            instance, trust = self.addresses.current, self.addresses.current_trust
            assert instance is not None and trust is not None  # set by a successful dial
            try:
                with attempt() as tried:
                    async with TaskGroup() as tg:
                        tg.create_task(self._carrier.back_to_udp(conn, instance, alpn=ALPN_CONTROL, trust=trust))
                        await self._session(conn)
            except BaseException as exc:
                conn.close(close_code(exc), "client stopping")
                raise
            finally:
                if state.control_connected:  # a session was up: start over with short waits
                    unreachable.reset()
                    refused.reset()
                state.control_connected = False
            backoff = self._failed(conn, tried.error, unreachable, refused)
            await pause(backoff.next_delay())

    def _trust_hint(self, error: DialError) -> str:
        """Without server-cas only the system store is trusted: a test or self-signed server
        certificate then fails every dial, and the fix is a key the user may not know."""
        if self._settings.server_cas is None and "certificate" in str(error).lower():
            return "; the system trust store does not trust it: set server-cas to the server's CA file"
        return ""

    def _failed(self, conn: Connection, error: BaseException | None, unreachable: Backoff,
                refused: Backoff) -> Backoff:
        """One line for how the session ended; the backoff before the next one."""
        addr = self.addresses.current
        if isinstance(error, ConnectionLost):
            if error.code == CloseCode.AUTH_FAILED:
                log.error("control server %s refused the token (auth-failed); retrying", addr)
                return refused
            if error.code == CloseCode.FORBIDDEN:
                log.error("control server %s refused this client (forbidden); retrying", addr)
                return refused
            if error.code == CloseCode.UNAVAILABLE:
                log.warning("control server %s cannot reach its shared state (unavailable); trying the next", addr)
                conn.close(CloseCode.OK)
                return unreachable
            if error.reason != MOVED_BACK:  # else carrier said it
                log.warning("lost the control server %s: %s", addr, _why_lost(error))
        elif error is not None:
            log.warning("control session failed: %s; retrying", describe(error))
            conn.close(close_code(error), "protocol error")
        conn.close(CloseCode.OK)
        return unreachable

    async def _session(self, conn: Connection) -> None:
        state = self._state
        messages = MessageStream(await conn.open_stream())
        # the previous session's reconnect id: control replaces that session at once if it has
        # not noticed yet that it is gone (another instance does not know it and ignores it)
        await messages.send(Authenticate(token=self._settings.token, reconnect_id=self._reconnect_id,
                                         metadata=self._settings.metadata))
        welcome = await messages.recv(Authenticated, timeout=HANDSHAKE_STEP_TIMEOUT)
        self._reconnect_id = welcome.reconnect_id
        try:
            state.observed = HostPort.parse(welcome.observed_addr)
        except ValueError:
            raise ProtocolError(f"control sent a bad observed address {welcome.observed_addr[:60]!r}") from None
        state.control_connected = True
        log.info("connected to control server %s; observed address %s", self.addresses.current, state.observed)
        state.candidates_changed.clear()
        for announce in self._announcements():
            await messages.send(announce)
        async with TaskGroup() as tg:
            tg.create_task(self._reannounce(messages))
            await self._receive(messages)

    async def _reannounce(self, messages: MessageStream) -> None:
        """Announce again whenever our candidates change (a port mapping came or went)."""
        while True:
            await self._state.candidates_changed.wait()
            self._state.candidates_changed.clear()
            for announce in self._announcements():
                await messages.send(announce)

    async def _receive(self, messages: MessageStream) -> None:
        state = self._state
        while True:
            message = await messages.recv((PeersUpdate, AnnounceRefused, RelaysUpdate))
            if isinstance(message, PeersUpdate):
                await self._on_peers(message)
            elif isinstance(message, RelaysUpdate):
                self._on_relays(message)
            elif isinstance(message, AnnounceRefused):
                reason = f"control refused {message.role} {message.name!r}: {CloseCode.describe(message.code)}"
                state.refused[(message.name, role_of(message.role))] = reason
                log.error(reason, extra={"endpoint": message.name})


def _why_lost(error: ConnectionLost) -> str:
    """A close code, or for a close without one (code 0: a transport close, a server that
    closed without saying why) what the transport said, rather than a bare "ok"."""
    if error.code != CloseCode.OK:
        return CloseCode.describe(error.code)
    side = "the server closed the connection" if error.by_peer else "the connection closed"
    return f"{side} ({error.reason})" if error.reason else side


def _one(addr: HostPort | None) -> tuple[HostPort, ...]:
    return () if addr is None else (addr,)

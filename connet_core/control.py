"""The control server: authenticates clients, matches destinations and sources by name and
pushes each side the other's certificate and addresses as they change."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from connet_core.addresses import sanitize
from connet_core.certs import load_identity
from connet_core.component import Outbox, default_store_dir, persistent_secret, spawn
from connet_core.config import ControlSettings
from connet_core.control_instances import OtherInstances, Published, RelayEntry
from connet_core.errors import ConnectionLost, PluginError, ProtocolError, StreamReset
from connet_core.logs import log_listening
from connet_core.model import (
    HostPort,
    PathKind,
    Principal,
    PrincipalKind,
    Role,
    RoutePolicy,
    Veto,
    certificate_hash,
)
from connet_core.plugins import Hooks, load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.matching import Announcement, Matcher, Push
from connet_core.protocol.grants import Grant, issue_grant, relay_grant_key
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    ALPN_RELAYS,
    Announce,
    AnnounceRefused,
    Authenticate,
    Authenticated,
    RelayInfo,
    RelayRegister,
    RelayRegistered,
    RelaysUpdate,
    Withdraw,
    metadata_problem,
)
from connet_core.protocol.streams import MessageStream
from connet_core.shared_state import SharedRelay
from connet_core.supervise import TaskGroup, contained
from connet_core.transport import Connection, Endpoint, TransportOptions, listen_over_tcp

NAT_KINDS = ("easy", "hard")

log = logging.getLogger("connet.control")

FIRST_MESSAGE_TIMEOUT = 5.0
GRANT_LIFETIME = 600.0  # seconds; grants are re-issued at half their life

TOKEN_RECHECK_INTERVAL = 1.0
MAX_NAME_LENGTH = 255
# how long a replacing session waits for the one it replaces to be dropped (it closes at once)
REPLACE_WAIT = 2.0


@dataclass(eq=False)
class ClientSession:
    id: int
    conn: Connection
    principal: Principal
    token: str
    address: HostPort
    metadata: str = ""
    outbox: Outbox = field(default_factory=Outbox)
    announced: dict[tuple[str, Role], Announcement] = field(default_factory=dict)
    # handed to the client in Authenticated: its next session presents it to replace this one
    reconnect_id: bytes = field(default_factory=lambda: os.urandom(16))
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Control:
    """``await Control(settings).run()`` serves until cancelled."""

    def __init__(self, settings: ControlSettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or load_hooks(settings.common.disable_plugins, plugin_settings=settings.common.plugins)
        self.matcher = Matcher(settings.endpoint_expiry)  # endpoint-expiry-timeout
        self.sessions: dict[int, ClientSession] = {}
        self._reconnect_ids: dict[bytes, int] = {}  # ClientSession.reconnect_id -> its id
        self._ids = itertools.count(1)
        self.endpoint: Endpoint | None = None
        self.tcp_address: HostPort | None = None
        self.started = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.relays: dict[bytes, RelayEntry] = {}  # by certificate hash
        # events for /metrics: refusals by reason, sessions that never started
        self.counters = {"auth_failed": 0, "forbidden": 0, "handshake_failures": 0, "plugin_errors": 0,
                         "unavailable": 0}
        self._grant_secret: bytes | None = None
        self.shared = self.hooks.shared_state("control")
        self.others = OtherInstances(self)
        self.published = Published(self.shared, self.others)  # our announcements, for the other instances

    async def start(self) -> None:
        """Open the store and bind; ``serve`` does the rest."""
        identity = load_identity(self.settings.cert_file, self.settings.key_file)
        store = self.hooks.open_store("control", self.settings.store_dir or default_store_dir("control"))
        # every instance of a deployment must issue grants and resets alike: the shared value
        # wins; the store's own is proposed, so a single instance keeps its keys when it joins
        await self.shared.open(self.others.change)
        self._grant_secret = await self.shared.secret("grant-secret", await persistent_secret(store, "grant-secret"))
        reset_key = await self.shared.secret("reset-key", await persistent_secret(store, "reset-key"))
        self.others.ready()
        transport = self.hooks.transport(self.settings.common.transport)
        alpns = [ALPN_CONTROL] + ([ALPN_RELAYS] if self.settings.accept_relays else [])
        options = TransportOptions(stateless_reset_key=reset_key)
        if self.settings.handshake_idle_timeout:  # handshake-idle-timeout
            options = dataclasses.replace(options, handshake_timeout=self.settings.handshake_idle_timeout)
        self.endpoint = await transport.bind(self.settings.addr, identity=identity, alpns=alpns, options=options)
        log_listening(log, "control", "udp", self.endpoint.local_address)
        if self.settings.tcp_addr is not None:  # for clients whose UDP is blocked
            self.tcp_address = await listen_over_tcp(self.endpoint, self.settings.tcp_addr)
            log_listening(log, "control", "tcp", self.tcp_address)

    async def run(self) -> None:
        await self.start()
        await self.serve()

    async def serve(self) -> None:
        assert self.endpoint is not None
        try:
            async with TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._recheck_tokens())
                tg.create_task(self._refresh_grants())
                tg.create_task(self.shared.run())
                if self.matcher.expiry > 0:
                    tg.create_task(self._expire_endpoints())
                self.started.set()
                while True:
                    conn = await self.endpoint.accept()
                    # a failure that escapes one connection's task ends that task, not the server
                    tg.create_task(contained(self._serve_connection(conn), f"connection from {conn.remote_address}",
                                             log))
        finally:
            await self.endpoint.close(CloseCode.SHUTDOWN, "shutdown")
            await self.shared.close()

    # ---- relays --------------------------------------------------------------------------

    def grant_key_for(self, relay_certificate: bytes) -> bytes:
        assert self._grant_secret is not None
        return relay_grant_key(self._grant_secret, certificate_hash(relay_certificate))

    def add_relay(self, entry: RelayEntry) -> None:
        self.relays[certificate_hash(entry.certificate)] = entry
        self.shared.add_relay(SharedRelay(self.shared.instance, entry.addr, entry.certificate, entry.metadata,
                                          entry.tcp_addr))
        self._push_relays()

    def remove_relay(self, entry: RelayEntry) -> None:
        key = certificate_hash(entry.certificate)
        if self.relays.get(key) is entry:
            del self.relays[key]
            self.shared.remove_relay(entry.certificate)
            self._push_relays()

    def _relays_update(self, announcement: Announcement) -> RelaysUpdate:
        """The relays for one announcement, each with a fresh grant (none if its route forbids relays)."""
        relays: list[RelayInfo] = []
        if RoutePolicy(announcement.route).allows(PathKind.RELAY):
            grant = Grant(announcement.name, announcement.role, certificate_hash(announcement.certificate),
                          time.time() + GRANT_LIFETIME)
            relays = [RelayInfo(e.addr, e.certificate, issue_grant(e.grant_key, grant), e.tcp_addr)
                      for e in self.relays.values()]
        return RelaysUpdate(announcement.name, announcement.role.value, tuple(relays))

    def _push_relays(self) -> None:
        for session in self.sessions.values():
            for (name, role), announcement in session.announced.items():
                session.outbox.put(("relays", name, role.value), self._relays_update(announcement))

    async def _expire_endpoints(self) -> None:
        """Announcements of vanished sessions go once their expiry passed (within a tick)."""
        while True:
            await asyncio.sleep(min(1.0, self.matcher.expiry / 4))
            self._deliver(self.matcher.expire(time.monotonic()))

    async def _refresh_grants(self) -> None:
        while True:
            await asyncio.sleep(GRANT_LIFETIME / 2)
            self._push_relays()

    async def _admit(self, conn: Connection, kind: PrincipalKind, first: type) -> tuple[Principal, MessageStream, Any] | None:
        """The steps every session starts with: the address (before any token is read), the
        first message and its token, then the principal from that address. A refusal closes
        the connection with a coarse code; only the log gets the reason."""
        address = conn.remote_address
        ip = address.ip()
        assert ip is not None  # the transport reports IP literals
        who = kind.value
        try:
            reason = await self.hooks.admit_address_async(kind, ip)
        except PluginError as exc:
            self._plugin_failed(conn, f"{who} {address}", exc)
            return None
        if reason is not None:
            log.warning("%s %s refused: %s", who, address, reason, extra={"peer": str(address)})
            self.counters["forbidden"] += 1
            conn.close(CloseCode.FORBIDDEN, "forbidden")
            return None
        try:
            stream = await asyncio.wait_for(conn.accept_stream(), FIRST_MESSAGE_TIMEOUT)
            messages = MessageStream(stream)
            hello = await messages.recv(first, timeout=FIRST_MESSAGE_TIMEOUT)
        except (TimeoutError, ConnectionLost, StreamReset):
            self.counters["handshake_failures"] += 1
            conn.close(CloseCode.TIMEOUT, "nothing said in time")
            return None
        except ProtocolError as exc:
            log.warning("%s %s: %s", who, address, exc, extra={"peer": str(address)})
            self.counters["handshake_failures"] += 1
            conn.close(exc.code, "protocol error")
            return None
        try:
            principal = await self.hooks.authenticate_async(kind, hello.token)
            reason = await self.hooks.authorize_async(principal, ip) if isinstance(principal, Principal) else None
        except PluginError as exc:
            self._plugin_failed(conn, f"{who} {address}", exc)
            return None
        if isinstance(principal, Veto):
            log.warning("%s %s refused: plugin %r vetoed the token: %s", who, address, principal.plugin,
                        principal.reason, extra={"peer": str(address)})
            self.counters["auth_failed"] += 1
            conn.close(CloseCode.AUTH_FAILED, "auth-failed")
            return None
        if principal is None:
            log.warning("%s %s refused: unknown token", who, address, extra={"peer": str(address)})
            self.counters["auth_failed"] += 1
            conn.close(CloseCode.AUTH_FAILED, "auth-failed")
            return None
        if reason is not None:
            log.warning("%s %s (%s) refused: %s", who, address, principal.label, reason, extra={"peer": str(address)})
            self.counters["forbidden"] += 1
            conn.close(CloseCode.FORBIDDEN, "forbidden")
            return None
        return principal, messages, hello

    def _plugin_failed(self, conn: Connection, who: str, exc: PluginError) -> None:
        """A plugin failed deciding about one connection: refuse that one (the plugin's
        fault, so INTERNAL_ERROR, not a verdict on the peer), one line, counted."""
        log.warning("%s refused: %s", who, exc, extra={"peer": str(conn.remote_address)})
        self.counters["plugin_errors"] += 1
        conn.close(CloseCode.INTERNAL_ERROR, "internal-error")

    async def _serve_relay(self, conn: Connection) -> None:
        address = conn.remote_address
        admitted = await self._admit(conn, PrincipalKind.RELAY, RelayRegister)
        if admitted is None:
            return
        principal, messages, hello = admitted
        try:
            relay_addr = str(HostPort(hello.hostname, hello.port))
            if not 0 < hello.port < 65536 or not hello.hostname:
                raise ProtocolError("bad relay address")
            if (problem := metadata_problem(hello.metadata)) is not None:
                raise ProtocolError(f"relay metadata {problem}")
            tcp_addr = str(HostPort(hello.hostname, hello.tcp_port)) if 0 < hello.tcp_port < 65536 else ""
            entry = RelayEntry(relay_addr, hello.certificate, self.grant_key_for(hello.certificate), conn,
                               metadata=hello.metadata, tcp_addr=tcp_addr)
            await messages.send(RelayRegistered(entry.grant_key))
        except ProtocolError as exc:
            conn.close(exc.code, "protocol error")
            return
        except (ConnectionLost, StreamReset):
            return
        log.info("relay %s registered as %s (%s)", address, relay_addr, principal.label, extra={"peer": str(address)})
        self.add_relay(entry)
        try:
            closed = await conn.wait_closed()
            log.info("relay %s gone: %s", relay_addr, CloseCode.describe(closed.code))
        finally:
            self.remove_relay(entry)

    def _deliver(self, pushes: list[Push]) -> None:
        """Send what the Matcher says; tell the other instances which lingering announcements left it."""
        self.published.released(self.matcher.take_released())
        for session_id, update in pushes:
            session = self.sessions.get(session_id)
            if session is not None:
                session.outbox.put((update.name, update.role), update)

    async def _serve_connection(self, conn: Connection) -> None:
        if not self.shared.healthy:
            # a stale view would match nobody across instances: the peer tries another one
            self.counters["unavailable"] += 1
            conn.close(CloseCode.UNAVAILABLE, "unavailable")
            return
        if conn.alpn == ALPN_CONTROL:
            await self._serve_client(conn)
        elif conn.alpn == ALPN_RELAYS and self.settings.accept_relays:
            await self._serve_relay(conn)
        else:
            conn.close(CloseCode.PROTOCOL_ERROR, "unexpected protocol")

    async def _serve_client(self, conn: Connection) -> None:
        address = conn.remote_address
        admitted = await self._admit(conn, PrincipalKind.CLIENT, Authenticate)
        if admitted is None:
            return
        principal, messages, hello = admitted
        if (problem := metadata_problem(hello.metadata)) is not None:
            log.warning("client %s: metadata %s", address, problem, extra={"peer": str(address)})
            self.counters["handshake_failures"] += 1
            conn.close(CloseCode.PROTOCOL_ERROR, "bad metadata")
            return
        await self._replace_earlier_session(hello, address)
        session = ClientSession(next(self._ids), conn, principal, hello.token, address, hello.metadata)
        self.sessions[session.id] = session
        self._reconnect_ids[session.reconnect_id] = session.id
        log.info("client %s connected (%s)", address, principal.label, extra={"peer": str(address)})
        assert self._tg is not None
        sender = spawn(self._tg, self._send_updates(session, messages))
        refuser = spawn(self._tg, self._refuse_extra_streams(conn))
        # a client that said it is stopping is gone for good: its announcements go at once;
        # only a lost session lingers for endpoint-expiry-timeout (a quick reconnect)
        stopped = False
        try:
            await messages.send(Authenticated(observed_addr=str(address), reconnect_id=session.reconnect_id))
            while True:
                message = await messages.recv((Announce, Withdraw))
                if isinstance(message, Announce):
                    await self._announce(session, message)
                else:
                    self._withdraw(session, message)
        except ConnectionLost as exc:
            stopped = exc.by_peer and exc.code == CloseCode.SHUTDOWN  # its announcements go below
        except StreamReset:
            pass
        except ProtocolError as exc:
            log.warning("client %s: %s", address, exc, extra={"peer": str(address)})
            conn.close(exc.code, "protocol error")
        finally:
            for task in (sender, refuser):
                if task is not None:
                    task.cancel()
            del self.sessions[session.id]
            del self._reconnect_ids[session.reconnect_id]
            self._deliver(self.matcher.drop_session(session.id, None if stopped else time.monotonic()))
            # a lingering session stays published to the other instances until the Matcher drops it
            self.published.drop_session(session.id, lingers=self.matcher.is_lingering(session.id))
            conn.close(CloseCode.OK)
            session.ended.set()
            log.info("client %s disconnected", address, extra={"peer": str(address)})

    async def _replace_earlier_session(self, hello: Authenticate, address: HostPort) -> None:
        """A client that lost its session (a new address, a dead path) comes back before
        control noticed: its new session, presenting the earlier one's reconnect id and the
        same token, closes that one with ``replaced`` and waits until it is dropped, so that
        its announcements linger and the new session's take them over without news to peers
        (instead of being offered twice until the old one times out)."""
        earlier = self.sessions.get(self._reconnect_ids.get(hello.reconnect_id, -1)) if hello.reconnect_id else None
        if earlier is None or earlier.token != hello.token:
            return
        log.info("client %s replaces its session from %s", address, earlier.address, extra={"peer": str(address)})
        earlier.conn.close(CloseCode.REPLACED, "replaced by a newer session")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(earlier.ended.wait(), REPLACE_WAIT)

    @staticmethod
    def _parse_endpoint(name: str, role: str, route: str | None = None) -> tuple[Role, RoutePolicy]:
        if not name or len(name) > MAX_NAME_LENGTH:
            raise ProtocolError(f"bad name {name[:40]!r}")
        try:
            return Role(role), RoutePolicy(route or "any")
        except ValueError:
            raise ProtocolError(f"bad role {role[:20]!r} or route {str(route)[:20]!r}") from None

    async def _announce(self, session: ClientSession, message: Announce) -> None:
        role, route = self._parse_endpoint(message.name, message.role, message.route)
        ip = session.address.ip()
        assert ip is not None
        code = CloseCode.FORBIDDEN
        try:
            reason = await self.hooks.authorize_async(session.principal, ip, message.name, role)
        except PluginError as exc:
            # this announcement is refused; the session and its other names stay
            reason, code = str(exc), CloseCode.INTERNAL_ERROR
            self.counters["plugin_errors"] += 1
        if reason is not None:
            log.warning(
                "client %s (%s) may not announce %s %r: %s",
                session.address, session.principal.label, role.value, message.name, reason,
                extra={"peer": str(session.address), "endpoint": message.name},
            )
            if code == CloseCode.FORBIDDEN:
                self.counters["forbidden"] += 1
            refusal = AnnounceRefused(message.name, role.value, code, CloseCode.describe(code))
            session.outbox.put(("refused", message.name, role.value), refusal)
            return
        addresses = sanitize(list(message.addresses), session.address)
        nat = message.nat if message.nat in NAT_KINDS else ""  # passed on only as one of its words
        announcement = Announcement(session.id, message.name, role, route.value, message.certificate, addresses, nat)
        session.announced[(message.name, role)] = announcement
        session.outbox.put(("relays", message.name, role.value), self._relays_update(announcement))
        log.info(
            "client %s announced %s %r", session.address, role.value, message.name,
            extra={"peer": str(session.address), "endpoint": message.name},
        )
        self._deliver(self.matcher.announce(announcement))  # first: a take-over decides the shared key
        self.published.announce(announcement)

    def _withdraw(self, session: ClientSession, message: Withdraw) -> None:
        role, _ = self._parse_endpoint(message.name, message.role)
        session.announced.pop((message.name, role), None)
        self.published.withdraw(session.id, message.name, role)
        self._deliver(self.matcher.withdraw(session.id, message.name, role))

    @staticmethod
    async def _refuse_extra_streams(conn: Connection) -> None:
        """A control session is one stream: any other a client opens is reset at once, so
        a flood of idle streams holds no memory here."""
        try:
            while True:
                stream = await conn.accept_stream()
                stream.reset(CloseCode.PROTOCOL_ERROR)
        except ConnectionLost:
            pass  # the session is over; its reader cleans up

    async def _send_updates(self, session: ClientSession, messages: MessageStream) -> None:
        try:
            while True:
                for message in await session.outbox.take():
                    await messages.send(message)
        except (ConnectionLost, StreamReset):
            pass  # the reader side notices too and cleans up

    async def _recheck_tokens(self) -> None:
        """Tokens can be revoked (tokens-file edited): end the sessions of removed tokens."""
        while True:
            await asyncio.sleep(TOKEN_RECHECK_INTERVAL)
            for session in list(self.sessions.values()):
                try:
                    principal = await self.hooks.authenticate_async(PrincipalKind.CLIENT, session.token)
                except PluginError as exc:
                    # no decision about this token now: close this session only, like a new one
                    self._plugin_failed(session.conn, f"client {session.address}", exc)
                    continue
                if not isinstance(principal, Principal):  # gone, expired, or vetoed now
                    log.warning("client %s: token revoked, closing its session", session.address)
                    session.conn.close(CloseCode.AUTH_FAILED, "auth-failed")

    def status(self) -> dict:
        return {
            "role": "control",
            "addr": str(self.endpoint.local_address) if self.endpoint else None,
            "tcp_addr": str(self.tcp_address) if self.tcp_address else None,
            "clients": [
                {"addr": str(s.address), "principal": s.principal.label, "metadata": s.metadata,
                 "announced": sorted(f"{role.value}:{name}" for name, role in s.announced)}
                for s in self.sessions.values()
            ],
            "relays": [{"addr": e.addr, "builtin": e.conn is None and e.instance is None, "instance": e.instance,
                        "metadata": e.metadata} for e in self.relays.values()],
            "shared_state": self.shared.status(),
            # with the endpoint's own (an optional transport attribute: Retry, datagrams dropped)
            "counters": {**self.counters, **getattr(self.endpoint, "counters", {})},
            "plugin_errors": self.hooks.error_report(),
            "names": self.matcher.names(),
            "lingering_endpoints": self.matcher.lingering(),
        }

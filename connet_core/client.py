"""The client: runs destinations and sources, keeps one proven QUIC connection per peer
client (dialed in parallel from the socket that reaches control), and tunnels TCP over it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from connet_core.addresses import DialLimiter, local_candidates
from connet_core.certs import make_identity, sign_proof, verify_proof
from connet_core.component import RECONNECT_CEILING, Backoff, dial_until_up, spawn
from connet_core.config import ClientSettings, EndpointSettings
from connet_core.errors import ConfigError, ConnectionLost, DialError, ProtocolError, StreamReset
from connet_core.forward import Counters, accept_tcp, dial_tcp, pump
from connet_core.logs import log_listening
from connet_core.model import HostPort, PathCandidate, PathKind, Role, RoutePolicy, certificate_hash
from connet_core.plugins import Hooks, load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    ALPN_PEER,
    Announce,
    AnnounceRefused,
    Authenticate,
    Authenticated,
    Challenge,
    Connect,
    Connected,
    ConnectRefused,
    Hello,
    ALPN_RELAY,
    PeerInfo,
    PeersUpdate,
    Proof,
    RelayInfo,
    RelaysUpdate,
    Welcome,
)
from connet_core.protocol.streams import MessageStream
from connet_core.supervise import attempt, checkpoint, close_code, contained, describe, pause
from connet_core.tls_stream import PinnedContexts, TLSStream
from connet_core.transport import Connection, Endpoint, Stream, Trust

log = logging.getLogger("connet.client")

HANDSHAKE_STEP_TIMEOUT = 5.0  # each message of the identity proof
CONTROL_DIAL_TIMEOUT = 5.0
PEER_DIAL_TIMEOUT = 5.0
UNKNOWN_PEER_GRACE = 3.0  # a peer may dial before control told us about it
UNMATCHED_GRACE = 10.0  # a peer control no longer lists keeps its connection this long (control restarts)
PATH_WAIT = 5.0  # a source connection waits this long for a first path
# A stream request moves on to the next path once its connection has heard nothing for this
# long: with keepalives every second, two silent seconds mean a dead path (the idle timeout
# declares it at three). A path that is merely busy keeps being heard, and gets up to
# REPLY_TIMEOUT, as does the last path.
DEAD_PATH_SILENCE = 2.0
REPLY_TIMEOUT = 15.0
DESTINATION_DIAL_TIMEOUT = 5.0

Key = tuple[str, Role]  # (name, this client's role for it)


def _role(text: str) -> Role:
    """A role in a message from control: a bad one is control's protocol error, not our bug."""
    try:
        return Role(text)
    except ValueError:
        raise ProtocolError(f"control sent an unknown role {text[:20]!r}") from None


@dataclass(eq=False)
class PeerConnection:
    conn: Connection
    dialer_hash: bytes  # whose dial this connection is: the deterministic rule keeps the lower
    since: float = field(default_factory=time.monotonic)
    active_streams: int = 0
    draining: bool = False


@dataclass(eq=False)
class Peer:
    """Another client this one is matched with, under one or more names."""

    certificate: bytes
    hash: bytes
    matched: dict[Key, PeerInfo] = field(default_factory=dict)
    connections: list[PeerConnection] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    dialer: asyncio.Task | None = None
    unmatched_since: float | None = None  # control stopped listing it (for every name)

    @property
    def label(self) -> str:
        return self.hash.hex()[:12]

    def busy(self) -> bool:
        return any(pc.active_streams for pc in self.connections)

    def addresses(self) -> list[HostPort]:
        seen: list[HostPort] = []
        for info in self.matched.values():
            for text in info.addresses:
                try:
                    addr = HostPort.parse(text)
                except ValueError:
                    continue
                if addr not in seen:
                    seen.append(addr)
        return seen

    def active(self) -> PeerConnection | None:
        live = [pc for pc in self.connections if not pc.draining and not pc.conn.closed]
        return live[0] if live else None


@dataclass(eq=False)
class RelayLink:
    """One relay this client may use, with the grants control gave for it, per name."""

    addr: HostPort
    certificate: bytes
    grants: dict[Key, bytes] = field(default_factory=dict)
    conn: Connection | None = None
    presented: set[bytes] = field(default_factory=set)  # grants the relay has seen on conn
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    active_streams: int = 0

    @property
    def label(self) -> str:
        return str(self.addr)

    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed


class Client:
    """``await Client(settings).run()`` serves until cancelled."""

    def __init__(self, settings: ClientSettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or load_hooks(settings.common.disable_plugins)
        self.identity, self.certificate, self._key = make_identity("connet-client")
        self.hash = certificate_hash(self.certificate)
        self.endpoint: Endpoint | None = None
        self.observed: HostPort | None = None
        self.control_connected = False
        self.peers: dict[bytes, Peer] = {}
        self.matches: dict[Key, dict[bytes, PeerInfo]] = {}
        self.refused: dict[Key, str] = {}
        self.destinations = {d.name: d for d in settings.destinations}
        self.counters: dict[Key, Counters] = {
            (e.name, e.role): Counters() for e in (*settings.destinations, *settings.sources)
        }
        self.source_addresses: dict[str, HostPort] = {}
        self.relays: dict[bytes, RelayLink] = {}  # by certificate hash
        self.relays_for: dict[Key, set[bytes]] = {}
        self.tls = PinnedContexts(self.identity)
        self._dial_limiter = DialLimiter()
        self.refused_connections: dict[Key, int] = {key: 0 for key in self.counters}
        self.handshake_failures = 0  # peer dials and proofs that failed
        self.started = asyncio.Event()
        self._paths_changed = asyncio.Condition()
        self._tg: asyncio.TaskGroup | None = None
        self._listeners: list[socket.socket] = []

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        transport = self.hooks.transport(self.settings.common.transport)
        self.endpoint = await transport.bind(self.settings.direct_addr, identity=self.identity, alpns=[ALPN_PEER])
        log_listening(log, "direct", "udp", self.endpoint.local_address)
        try:
            for source in self.settings.sources:
                self._listeners.append(self._listen_tcp(source))
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for source, sock in zip(self.settings.sources, self._listeners):
                    tg.create_task(self._accept_tcp(source, sock))
                tg.create_task(self._accept_peers())
                tg.create_task(self._control_loop())
                tg.create_task(self._retire_unmatched())
                self.started.set()
        finally:
            for sock in self._listeners:
                sock.close()
            await self.endpoint.close(CloseCode.SHUTDOWN, "shutdown")

    def _listen_tcp(self, source: EndpointSettings) -> socket.socket:
        host = source.addr.host or None
        try:
            infos = socket.getaddrinfo(host, source.addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ConfigError(f"source {source.name!r}: cannot resolve addr {source.addr}: {exc.strerror}") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            # the one line the user sees (exit 2): which source, which address, what the OS said
            raise ConfigError(f"source {source.name!r}: cannot listen on {source.addr}: "
                              f"{exc.strerror or exc}") from None
        sock.setblocking(False)
        name = sock.getsockname()
        bound = HostPort(name[0], name[1])
        self.source_addresses[source.name] = bound
        log_listening(log, "source", "tcp", bound)
        return sock

    # ---- control session -----------------------------------------------------------------

    def _announcements(self) -> list[Announce]:
        assert self.endpoint is not None
        addresses = tuple(self._direct_candidates())
        return [
            Announce(e.name, e.role.value, e.route.value, self.certificate, addresses)
            for e in (*self.settings.destinations, *self.settings.sources)
        ]

    def _direct_candidates(self) -> list[str]:
        """Where peers may dial us, besides the address control observes."""
        assert self.endpoint is not None
        bound = self.endpoint.local_address
        ip = bound.ip()
        if ip is not None and not ip.is_unspecified:
            return [str(bound)]  # bound to one address: nothing else reaches this socket
        server_ip = self.settings.server_addr.ip()
        # on one machine (tests, demos) loopback is a real path; across machines it is not
        loopback = (server_ip is not None and server_ip.is_loopback) or self.settings.server_addr.host == "localhost"
        return local_candidates(bound.port, include_loopback=loopback)

    async def _control_loop(self) -> None:
        assert self.endpoint is not None
        unreachable = Backoff(0.5, RECONNECT_CEILING)
        refused = Backoff(5.0, 60.0)  # a refused token or address will not fix itself soon
        settings = self.settings
        trust = Trust(server_name=settings.server_name, cafile=settings.server_cas)
        while True:
            conn = await dial_until_up(self.endpoint, settings.server_addr, alpn=ALPN_CONTROL, trust=trust,
                                       timeout=CONTROL_DIAL_TIMEOUT, backoff=unreachable, logger=log,
                                       what="control server")
            try:
                with attempt() as tried:
                    await self._control_session(conn)
            except BaseException as exc:
                conn.close(close_code(exc), "client stopping")
                raise
            finally:
                if self.control_connected:  # a session was up: start over with short waits
                    unreachable.reset()
                    refused.reset()
                self.control_connected = False
            backoff = self._control_failed(conn, tried.error, unreachable, refused)
            await pause(backoff.next_delay())

    def _control_failed(self, conn: Connection, error: BaseException | None, unreachable: Backoff,
                        refused: Backoff) -> Backoff:
        """One line for how the session ended; the backoff before the next one."""
        addr = self.settings.server_addr
        if isinstance(error, ConnectionLost):
            if error.code == CloseCode.AUTH_FAILED:
                log.error("control server %s refused the token (auth-failed); retrying", addr)
                return refused
            if error.code == CloseCode.FORBIDDEN:
                log.error("control server %s refused this client (forbidden); retrying", addr)
                return refused
            log.warning("lost the control server %s: %s", addr, CloseCode.describe(error.code))
        elif error is not None:
            log.warning("control session failed: %s; retrying", describe(error))
            conn.close(close_code(error), "protocol error")
        conn.close(CloseCode.OK)
        return unreachable

    async def _control_session(self, conn: Connection) -> None:
        messages = MessageStream(await conn.open_stream())
        await messages.send(Authenticate(token=self.settings.token))
        welcome = await messages.recv(Authenticated, timeout=HANDSHAKE_STEP_TIMEOUT)
        try:
            self.observed = HostPort.parse(welcome.observed_addr)
        except ValueError:
            raise ProtocolError(f"control sent a bad observed address {welcome.observed_addr[:60]!r}") from None
        self.control_connected = True
        log.info("connected to control server %s; observed address %s", self.settings.server_addr, self.observed)
        for announce in self._announcements():
            await messages.send(announce)
        while True:
            message = await messages.recv((PeersUpdate, AnnounceRefused, RelaysUpdate))
            if isinstance(message, PeersUpdate):
                await self._update_peers(message)
            elif isinstance(message, RelaysUpdate):
                self._update_relays(message)
            elif isinstance(message, AnnounceRefused):
                reason = f"control refused {message.role} {message.name!r}: {CloseCode.describe(message.code)}"
                self.refused[(message.name, _role(message.role))] = reason
                log.error(reason, extra={"endpoint": message.name})

    # ---- peers ---------------------------------------------------------------------------

    async def _update_peers(self, update: PeersUpdate) -> None:
        key = (update.name, _role(update.role))
        fresh = {certificate_hash(p.certificate): p for p in update.peers if p.certificate != self.certificate}
        stale = set(self.matches.get(key, {})) - set(fresh)
        self.matches[key] = fresh
        self.refused.pop(key, None)
        for peer_hash, info in fresh.items():
            peer = self.peers.get(peer_hash)
            if peer is None:
                peer = self.peers[peer_hash] = Peer(info.certificate, peer_hash)
                log.info("peer %s matched for %s %r", peer.label, key[1].value, key[0], extra={"endpoint": key[0]})
            peer.matched[key] = info
            peer.unmatched_since = None
            peer.changed.set()
            self._ensure_dialer(peer)
        for peer_hash in stale:
            peer = self.peers[peer_hash]
            peer.matched.pop(key, None)
            peer.changed.set()
            if not peer.matched:
                # no new streams; open ones finish. Its connection stays a while, so a
                # control restart (every list briefly empty) does not cut the tunnels.
                # Dials stop: the addresses were only worth dialing as that peer's.
                peer.unmatched_since = time.monotonic()
                if peer.dialer is not None:
                    peer.dialer.cancel()
        async with self._paths_changed:
            self._paths_changed.notify_all()

    async def _retire_unmatched(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for peer in list(self.peers.values()):
                since = peer.unmatched_since
                if since is not None and now - since > UNMATCHED_GRACE and not peer.busy():
                    self._forget(peer)

    def _forget(self, peer: Peer) -> None:
        log.info("peer %s is gone", peer.label)
        del self.peers[peer.hash]
        if peer.dialer is not None:
            peer.dialer.cancel()
        for pc in peer.connections:
            pc.conn.close(CloseCode.OK, "peer withdrawn")

    def _wants_direct(self, peer: Peer) -> bool:
        for (name, role), info in peer.matched.items():
            local = self._policy(name, role)
            if local.allows(PathKind.DIRECT) and RoutePolicy(info.route).allows(PathKind.DIRECT):
                return True
        return False

    def _policy(self, name: str, role: Role) -> RoutePolicy:
        for e in self.settings.sources if role is Role.SOURCE else self.settings.destinations:
            if e.name == name:
                return e.route
        return RoutePolicy.ANY

    def _ensure_dialer(self, peer: Peer) -> None:
        if peer.dialer is None or peer.dialer.done():
            assert self._tg is not None
            peer.dialer = spawn(self._tg, self._keep_direct(peer))

    async def _keep_direct(self, peer: Peer) -> None:
        """Dial the peer's candidates in parallel whenever there is no live connection.
        Both ends do this at once, which is what opens the NAT mappings."""
        backoff = Backoff(0.5, 5.0)
        while True:
            checkpoint()  # wait_for below can return although this task was cancelled
            if peer.active() is not None or not self._wants_direct(peer) or not peer.addresses():
                peer.changed.clear()
                await peer.changed.wait()
                continue
            with attempt() as tried:
                if await self._dial_peer(peer):
                    backoff.reset()
                    continue
            if tried.error is not None:
                log.warning("peer %s: dialing failed: %s; retrying", peer.label, describe(tried.error))
            try:
                # a change (new addresses, a connection accepted from the peer) retries at once
                peer.changed.clear()
                await asyncio.wait_for(peer.changed.wait(), backoff.next_delay())
            except TimeoutError:
                pass  # time for the next round

    async def _dial_peer(self, peer: Peer) -> bool:
        assert self.endpoint is not None
        endpoint = self.endpoint
        trust = Trust(pinned_der=peer.certificate)
        winner: list[Connection] = []

        async def attempt(address: HostPort) -> None:
            try:
                conn = await endpoint.dial(address, alpn=ALPN_PEER, trust=trust, timeout=PEER_DIAL_TIMEOUT)
            except DialError as exc:
                log.debug("dial peer %s at %s failed: %s", peer.label, address, exc)
                return
            try:
                await self._prove(conn)
            except (ConnectionLost, StreamReset, ProtocolError) as exc:
                self.handshake_failures += 1
                log.warning("peer %s at %s refused our proof: %s", peer.label, address, exc)
                conn.close(CloseCode.PROOF_FAILED)
                return
            except BaseException as exc:  # the dialer was cancelled (peer withdrawn, stopping)
                conn.close(close_code(exc), "dial abandoned")
                raise
            winner.append(conn)
            self._adopt(peer, conn, dialer_hash=self.hash)

        now = time.monotonic()
        addresses = [a for a in peer.addresses() if self._dial_limiter.allow(a, now)]
        if not addresses:
            return False
        log.debug("dialing peer %s at %s", peer.label, ", ".join(map(str, addresses)))
        async with asyncio.TaskGroup() as tg:
            for address in addresses:
                tg.create_task(attempt(address))
        return bool(winner)

    async def _prove(self, conn: Connection, alpn: str = ALPN_PEER, grants: tuple[bytes, ...] = ()) -> None:
        """The dialer's half of the identity proof (the listener was pinned by TLS)."""
        messages = MessageStream(await conn.open_stream())
        await messages.send(Hello(certificate=self.certificate, grants=grants))
        challenge = await messages.recv(Challenge, timeout=HANDSHAKE_STEP_TIMEOUT)
        listener_hash = certificate_hash(conn.peer_certificate or b"")
        await messages.send(Proof(sign_proof(self._key, challenge.nonce, listener_hash, alpn)))
        await messages.recv(Welcome, timeout=HANDSHAKE_STEP_TIMEOUT)

    async def _accept_peers(self) -> None:
        assert self.endpoint is not None and self._tg is not None
        while True:
            try:
                conn = await self.endpoint.accept()
            except ConnectionLost:
                return  # the endpoint closed: nothing more will arrive
            spawn(self._tg, contained(self._verify_peer(conn), "incoming peer connection", log))

    async def _matched_source(self, name: str, peer_hash: bytes) -> PeerInfo | None:
        """The source ``peer_hash`` as control matched it to our destination ``name``, waiting
        a little: its stream can overtake control's news (after a control restart, say)."""
        key = (name, Role.DESTINATION)
        async with self._paths_changed:
            try:
                await asyncio.wait_for(
                    self._paths_changed.wait_for(lambda: peer_hash in self.matches.get(key, {})), UNKNOWN_PEER_GRACE
                )
            except TimeoutError:
                return None
        return self.matches[key][peer_hash]

    async def _known_peer(self, peer_hash: bytes) -> Peer | None:
        """The peer with this certificate, waiting a little: its dial can overtake control's news."""
        async with self._paths_changed:
            try:
                await asyncio.wait_for(
                    self._paths_changed.wait_for(lambda: peer_hash in self.peers), UNKNOWN_PEER_GRACE
                )
            except TimeoutError:
                return None
        return self.peers[peer_hash]

    async def _verify_peer(self, conn: Connection) -> None:
        """The listener's half: nothing is served before the dialer proves its key."""
        address = conn.remote_address
        try:
            stream = await asyncio.wait_for(conn.accept_stream(), HANDSHAKE_STEP_TIMEOUT)
            messages = MessageStream(stream)
            hello = await messages.recv(Hello, timeout=HANDSHAKE_STEP_TIMEOUT)
            peer = await self._known_peer(certificate_hash(hello.certificate))
            if peer is None:
                self.handshake_failures += 1
                log.warning("connection from %s with a certificate no matched peer announced", address)
                conn.close(CloseCode.UNKNOWN_PEER, "unknown peer")
                return
            nonce = os.urandom(32)
            await messages.send(Challenge(nonce))
            proof = await messages.recv(Proof, timeout=HANDSHAKE_STEP_TIMEOUT)
            if not verify_proof(hello.certificate, proof.signature, nonce, self.hash, ALPN_PEER):
                self.handshake_failures += 1
                log.warning("peer %s at %s failed the identity proof", peer.label, address)
                conn.close(CloseCode.PROOF_FAILED, "proof failed")
                return
            await messages.send(Welcome())
        except (TimeoutError, ConnectionLost, StreamReset):
            conn.close(CloseCode.TIMEOUT, "no proof")
            return
        except ProtocolError as exc:
            log.warning("peer at %s: %s", address, exc)
            conn.close(exc.code, "protocol error")
            return
        self._adopt(peer, conn, dialer_hash=peer.hash)

    def _adopt(self, peer: Peer, conn: Connection, dialer_hash: bytes) -> None:
        """A proven connection joins the peer. When both dials succeeded, both ends keep the
        one dialed by the lower certificate hash and let the other drain and close."""
        if self.peers.get(peer.hash) is not peer:
            conn.close(CloseCode.OK, "peer withdrawn")
            return
        pc = PeerConnection(conn, dialer_hash)
        peer.connections.append(pc)
        preferred = min(self.hash, peer.hash)
        peer.connections.sort(key=lambda c: (c.dialer_hash != preferred, c.since))
        for extra in peer.connections[1:]:
            if not extra.draining:
                # no new streams; both ends stop its keepalive, so it idles out once its last
                # stream is delivered (closing it now would cut streams still in flight)
                extra.draining = True
                extra.conn.stop_keepalive()
        log.info(
            "peer %s connected direct via %s (%s)", peer.label, conn.remote_address,
            "dialed" if conn.is_dialer else "accepted",
            extra={"peer": str(conn.remote_address), "path": "direct"},
        )
        peer.changed.set()
        assert self._tg is not None
        spawn(self._tg, contained(self._serve_peer(peer, pc), f"peer {peer.label}", log))
        spawn(self._tg, self._notify_paths())

    async def _notify_paths(self) -> None:
        async with self._paths_changed:
            self._paths_changed.notify_all()

    async def _serve_peer(self, peer: Peer, pc: PeerConnection) -> None:
        """Serve streams the peer opens (it is a source for one of our destinations)."""
        assert self._tg is not None
        try:
            while True:
                stream = await pc.conn.accept_stream()
                spawn(self._tg, contained(self._serve_destination_stream(peer, pc, stream),
                                          f"stream from peer {peer.label}", log))
        except ConnectionLost as exc:
            if pc in peer.connections:
                peer.connections.remove(pc)
            if not pc.draining:
                log.info(
                    "peer %s direct path via %s closed: %s", peer.label, pc.conn.remote_address,
                    CloseCode.describe(exc.code), extra={"peer": str(pc.conn.remote_address)},
                )
            peer.changed.set()

    async def _serve_destination_stream(self, peer: Peer, pc: PeerConnection, stream) -> None:
        messages = MessageStream(stream)
        try:
            request = await messages.recv(Connect, timeout=HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset) as exc:
            log.debug("stream from peer %s: %s", peer.label, exc)
            stream.reset(exc.code)
            return
        destination = self.destinations.get(request.name)
        refusal: tuple[int, str] | None = None
        if destination is None:
            refusal = (CloseCode.NOT_FOUND, "no such destination")
        elif await self._matched_source(request.name, peer.hash) is None:
            refusal = (CloseCode.FORBIDDEN, "peer not matched for this name")
        elif not destination.route.allows(PathKind.DIRECT):
            refusal = (CloseCode.NO_ROUTE, "destination does not allow direct")
        if refusal is not None:
            log.warning("peer %s asked for %r: refused (%s)", peer.label, request.name, refusal[1], extra={"endpoint": request.name})
            await self._refuse(messages, stream, *refusal)
            return
        assert destination is not None
        await self._connect_destination(destination, messages, stream, pc)

    async def _connect_destination(
        self, destination: EndpointSettings, messages: MessageStream, stream: Stream, pc: PeerConnection | None
    ) -> None:
        """Dial the destination's addr and tunnel; refuse the stream if it cannot connect."""
        name = destination.name
        try:
            end = await asyncio.wait_for(dial_tcp(destination.addr.host, destination.addr.port), DESTINATION_DIAL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.warning("destination %r: cannot connect to %s: %s", name, destination.addr, exc, extra={"endpoint": name})
            await self._refuse(messages, stream, CloseCode.DESTINATION_UNREACHABLE, "cannot connect")
            return
        if pc is not None:
            pc.active_streams += 1
        try:
            await messages.send(Connected())
            await pump(end, stream, self.counters[(name, Role.DESTINATION)], messages.take_remaining())
        except (ConnectionLost, StreamReset, ProtocolError):
            end.abort()
        except BaseException:
            end.abort()  # stopping before the tunnel started: the service sees a reset too
            raise
        finally:
            if pc is not None:
                pc.active_streams -= 1

    @staticmethod
    async def _refuse(messages: MessageStream, stream: Stream, code: int, reason: str) -> None:
        try:
            await messages.send(ConnectRefused(code, reason))
            await stream.write_eof()
        except (ConnectionLost, StreamReset):
            pass  # nobody left to tell

    # ---- relays --------------------------------------------------------------------------

    def _update_relays(self, update: RelaysUpdate) -> None:
        key = (update.name, _role(update.role))
        fresh: dict[bytes, RelayInfo] = {}
        for info in update.relays:
            try:
                HostPort.parse(info.addr)
            except ValueError:
                log.warning("control sent a relay with a bad address %r", info.addr)
                continue
            fresh[certificate_hash(info.certificate)] = info
        for relay_hash in self.relays_for.get(key, set()) - set(fresh):
            link = self.relays.get(relay_hash)
            if link is not None:
                link.grants.pop(key, None)
                if not link.grants:
                    self._drop_relay(relay_hash, link)
        self.relays_for[key] = set(fresh)
        for relay_hash, info in fresh.items():
            link = self.relays.get(relay_hash)
            if link is None:
                link = self.relays[relay_hash] = RelayLink(HostPort.parse(info.addr), info.certificate)
            link.grants[key] = info.grant
            link.changed.set()
            if link.task is None or link.task.done():
                assert self._tg is not None
                link.task = spawn(self._tg, self._keep_relay(link))

    def _drop_relay(self, relay_hash: bytes, link: RelayLink) -> None:
        log.info("relay %s is no longer offered", link.label)
        del self.relays[relay_hash]
        if link.task is not None:
            link.task.cancel()
        if link.conn is not None:
            link.conn.close(CloseCode.OK, "relay withdrawn")

    async def _keep_relay(self, link: RelayLink) -> None:
        """Stay connected to a relay while it holds grants of ours; serve what it sends.
        Whatever the relay or the network does ends one connection, never the client."""
        backoff = Backoff(0.5, RECONNECT_CEILING)
        trust = Trust(pinned_der=link.certificate)
        while True:
            with attempt() as tried:
                await self._relay_session(link, trust, backoff)
            error = tried.error
            if isinstance(error, DialError):
                log.warning("cannot reach relay %s: %s", link.label, describe(error))
            elif isinstance(error, ConnectionLost):
                log.warning("relay %s connection closed: %s", link.label, CloseCode.describe(error.code))
            elif error is not None:
                log.warning("relay %s: %s; retrying", link.label, describe(error))
            await pause(backoff.next_delay())

    async def _relay_session(self, link: RelayLink, trust: Trust, backoff: Backoff) -> None:
        """One connection to the relay: prove our key with the grants, then serve its
        streams and show it grants for names announced later, until something fails."""
        assert self.endpoint is not None
        conn = await self.endpoint.dial(link.addr, alpn=ALPN_RELAY, trust=trust, timeout=PEER_DIAL_TIMEOUT)
        try:
            grants = tuple(link.grants.values())
            await self._prove(conn, ALPN_RELAY, grants)
            backoff.reset()
            link.conn, link.presented = conn, set(grants)
            log.info("relay %s connected", link.label, extra={"peer": str(link.addr), "path": "relay"})
            await self._notify_paths()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._present_new_grants(link, conn))
                while True:
                    stream = await conn.accept_stream()
                    spawn(tg, contained(self._serve_relayed_stream(link, stream),
                                        f"relayed stream from {link.label}", log))
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
            await messages.send(Hello(certificate=self.certificate, grants=new))
            await messages.recv(Welcome, timeout=HANDSHAKE_STEP_TIMEOUT)
            link.presented.update(new)
            await self._notify_paths()

    async def _serve_relayed_stream(self, link: RelayLink, stream: Stream) -> None:
        """A source reaches one of our destinations through the relay: TLS end to end."""
        messages = MessageStream(stream)
        try:
            request = await messages.recv(Connect, timeout=HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset) as exc:
            stream.reset(exc.code)
            return
        destination = self.destinations.get(request.name)
        source = await self._matched_source(request.name, request.peer) if destination is not None else None
        if destination is None or source is None or not destination.route.allows(PathKind.RELAY):
            log.warning("relay %s brought a stream for %r from an unmatched peer or a route we do not allow",
                        link.label, request.name, extra={"endpoint": request.name})
            stream.reset(CloseCode.FORBIDDEN)
            return
        tls = TLSStream(stream, server_side=True, contexts=self.tls, peer_der=source.certificate,
                        initial=messages.take_remaining())
        try:
            await asyncio.wait_for(tls.handshake(), HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset, TimeoutError) as exc:
            log.warning("relayed stream for %r: end-to-end TLS failed: %s", request.name, exc, extra={"endpoint": request.name})
            stream.reset(CloseCode.PROOF_FAILED)
            return
        link.active_streams += 1
        try:
            await self._connect_destination(destination, MessageStream(tls), tls, None)
        finally:
            link.active_streams -= 1

    # ---- sources -------------------------------------------------------------------------

    async def _accept_tcp(self, source: EndpointSettings, sock: socket.socket) -> None:
        assert self._tg is not None
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.1, 2.0)
        while True:
            with attempt() as tried:
                conn, _ = await loop.sock_accept(sock)
                backoff.reset()
                spawn(self._tg, contained(self._serve_source_connection(source, conn),
                                          f"source {source.name!r} connection", log))
            if tried.error is not None:  # out of file descriptors, say: the listener stays
                log.warning("source %r: accepting a connection failed: %s; retrying", source.name,
                            describe(tried.error), extra={"endpoint": source.name})
                await pause(backoff.next_delay())

    def _paths(self, source: EndpointSettings) -> tuple[list[PathCandidate], str | None]:
        """Usable paths for a new connection, best first, or why there are none."""
        key = (source.name, Role.SOURCE)
        matched = self.matches.get(key, {})
        if not matched:
            return [], f"no destination {source.name!r} is connected"
        routable = {
            peer_hash: RoutePolicy(info.route)
            for peer_hash, info in matched.items()
            if any(source.route.allows(kind) and RoutePolicy(info.route).allows(kind) for kind in PathKind)
        }
        if not routable:
            theirs = ", ".join(sorted({info.route for info in matched.values()}))
            return [], f"no route: the source allows {source.route.value}, the destination allows {theirs}"
        candidates: list[PathCandidate] = []
        relays = [
            self.relays[h] for h in self.relays_for.get(key, set())
            if h in self.relays and self.relays[h].up() and self.relays[h].grants.get(key) in self.relays[h].presented
        ]
        for peer_hash, remote in routable.items():
            peer = self.peers.get(peer_hash)
            if peer is None:
                continue
            pc = peer.active()
            if pc is not None and remote.allows(PathKind.DIRECT):
                rtt = pc.conn.stats().smoothed_rtt
                candidates.append(PathCandidate(PathKind.DIRECT, peer.label, None, rtt, key=(peer, pc)))
            if remote.allows(PathKind.RELAY):
                for link in relays:
                    assert link.conn is not None
                    rtt = link.conn.stats().smoothed_rtt
                    candidates.append(PathCandidate(PathKind.RELAY, peer.label, link.label, rtt, key=(peer, link)))
        policies = set(routable.values())
        # the hook takes one remote policy: candidates already exclude what their own peer forbids
        remote_policy = policies.pop() if len(policies) == 1 else RoutePolicy.ANY
        ordered = self.hooks.select_routes(source.name, source.route, remote_policy, candidates)
        if not ordered:
            return [], f"no path to {source.name!r} is up yet"
        return ordered, None

    async def _wait_paths(self, source: EndpointSettings) -> tuple[list[PathCandidate], str | None]:
        deadline = time.monotonic() + PATH_WAIT
        async with self._paths_changed:
            while True:
                paths, why = self._paths(source)
                remaining = deadline - time.monotonic()
                if paths or (why or "").startswith("no route") or remaining <= 0:
                    return paths, why
                try:
                    await asyncio.wait_for(self._paths_changed.wait(), remaining)
                except TimeoutError:
                    pass  # one last look above

    async def _serve_source_connection(self, source: EndpointSettings, sock: socket.socket) -> None:
        try:
            end = await accept_tcp(sock)
        except BaseException:
            sock.close()
            raise
        try:
            opened = await self._open_some_path(source)
        except BaseException:
            end.abort()  # stopping: the program must not take an empty answer for a complete one
            raise
        if opened is None:
            end.abort()  # refused: a reset, not an empty answer
            return
        stream, initial, via = opened
        try:
            await pump(end, stream, self.counters[(source.name, Role.SOURCE)], initial)
        finally:
            self._release(via)

    @staticmethod
    def _release(via: PeerConnection | RelayLink) -> None:
        via.active_streams -= 1

    async def _open_some_path(
        self, source: EndpointSettings
    ) -> tuple[Stream, bytes, PeerConnection | RelayLink] | None:
        """A tunneled stream over the best path that works, or None (the log says why).

        Paths are tried best first. When a path's connection vanished under the request (a
        duplicate closed by the other side, a path that just died), the choice is made again:
        no TCP byte has been read yet, so nothing is lost by retrying."""
        for _ in range(3):
            paths, why = await self._wait_paths(source)
            if not paths:
                log.warning("source %r: refusing a connection: %s", source.name, why, extra={"endpoint": source.name})
                self.refused_connections[(source.name, Role.SOURCE)] += 1
                return None
            vanished = False
            for index, path in enumerate(paths):
                last = index == len(paths) - 1
                peer, via = path.key
                via.active_streams += 1
                try:
                    opened = await self._open_path(source.name, peer, via, last)
                except (ConnectionLost, StreamReset) as exc:
                    vanished = True
                    log.debug("source %r: %s path to peer %s went away: %s", source.name, path.kind.value,
                              peer.label, exc, extra={"endpoint": source.name, "path": path.kind.value})
                    opened = None
                except (ProtocolError, TimeoutError) as exc:
                    log.warning("source %r: %s path to peer %s failed: %s", source.name, path.kind.value,
                                peer.label, exc, extra={"endpoint": source.name, "path": path.kind.value})
                    opened = None
                if opened is None:
                    self._release(via)
                    continue
                log.debug(
                    "source %r: connection via %s path to peer %s%s", source.name, path.kind.value, peer.label,
                    f" (relay {path.relay})" if path.relay else "", extra={"endpoint": source.name, "path": path.kind.value},
                )
                return (*opened, via)
            if not vanished:
                break
        log.warning("source %r: no path accepted the connection", source.name, extra={"endpoint": source.name})
        self.refused_connections[(source.name, Role.SOURCE)] += 1
        return None

    async def _open_path(
        self, name: str, peer: Peer, via: PeerConnection | RelayLink, last: bool
    ) -> tuple[Stream, bytes] | None:
        """Open a tunneled stream to ``peer``'s destination ``name``: the stream to pump and
        the bytes already read past the reply, or None if the destination refused. A stream
        given up on is reset, so the destination stops working on it too."""
        if isinstance(via, PeerConnection):
            raw: Stream = await via.conn.open_stream()
        else:
            assert via.conn is not None
            raw = await via.conn.open_stream()
        try:
            opened = await self._request(name, peer, via, raw, last)
        except (ProtocolError, TimeoutError):
            raw.reset(CloseCode.TIMEOUT)
            raise
        if opened is None:
            raw.reset(CloseCode.OK)
        return opened

    async def _request(
        self, name: str, peer: Peer, via: PeerConnection | RelayLink, raw: Stream, last: bool
    ) -> tuple[Stream, bytes] | None:
        assert via.conn is not None
        stream = raw
        if isinstance(via, RelayLink):
            hop = MessageStream(raw)
            await hop.send(Connect(name, peer=peer.hash))
            relayed = await self._reply(hop, via.conn, last)
            if isinstance(relayed, ConnectRefused):
                log.warning("relay %s refused %r: %s", via.label, name, CloseCode.describe(relayed.code),
                            extra={"endpoint": name})
                return None
            stream = TLSStream(raw, server_side=False, contexts=self.tls, peer_der=peer.certificate,
                               initial=hop.take_remaining())
            await asyncio.wait_for(stream.handshake(), REPLY_TIMEOUT)
            messages = MessageStream(stream)
        else:
            messages = MessageStream(stream)
            await messages.send(Connect(name))
        reply = await self._reply(messages, via.conn, last)
        if isinstance(reply, ConnectRefused):
            log.warning("source %r: peer %s refused: %s", name, peer.label, CloseCode.describe(reply.code),
                        extra={"endpoint": name})
            return None
        return stream, messages.take_remaining()

    @staticmethod
    async def _reply(messages: MessageStream, conn: Connection, last: bool) -> Connected | ConnectRefused:
        """The reply to a stream request. Unless this is the ``last`` path, give up once the
        connection has been silent for DEAD_PATH_SILENCE (the path died); a busy path that
        is still heard from gets up to REPLY_TIMEOUT, like the last one."""
        waiting = asyncio.ensure_future(messages.recv((Connected, ConnectRefused)))
        try:
            started = heard_at = time.monotonic()
            heard = conn.stats().bytes_received
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=DEAD_PATH_SILENCE / 4)
                if done:
                    return waiting.result()
                now = time.monotonic()
                if conn.stats().bytes_received != heard:
                    heard, heard_at = conn.stats().bytes_received, now
                if now - started >= REPLY_TIMEOUT or (not last and now - heard_at >= DEAD_PATH_SILENCE):
                    raise TimeoutError(f"no reply within {now - started:.1f}s")
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)

    # ---- status --------------------------------------------------------------------------

    def status(self) -> dict:
        def relay_paths(key: Key, peer: Peer) -> list[dict]:
            info = peer.matched.get(key)
            local = self._policy(*key)
            if info is None or not (local.allows(PathKind.RELAY) and RoutePolicy(info.route).allows(PathKind.RELAY)):
                return []
            links = [self.relays[h] for h in self.relays_for.get(key, set()) if h in self.relays]
            return [
                {
                    "kind": "relay",
                    "addr": link.label,
                    "rtt": link.conn.stats().smoothed_rtt,
                    "bytes_sent": link.conn.stats().bytes_sent,
                    "bytes_received": link.conn.stats().bytes_received,
                    "active_streams": link.active_streams,
                }
                for link in links
                if link.conn is not None and link.up()
            ]

        def peer_view(key: Key, peer: Peer) -> dict:
            return {
                "id": peer.label,
                "paths": relay_paths(key, peer) + [
                    {
                        "kind": "direct",
                        "addr": str(pc.conn.remote_address),
                        "rtt": pc.conn.stats().smoothed_rtt,
                        "dialed": pc.conn.is_dialer,
                        "draining": pc.draining,
                        "bytes_sent": pc.conn.stats().bytes_sent,
                        "bytes_received": pc.conn.stats().bytes_received,
                        "active_streams": pc.active_streams,
                    }
                    for pc in peer.connections
                    if not pc.conn.closed
                ],
            }

        endpoints = []
        for e in (*self.settings.destinations, *self.settings.sources):
            key = (e.name, e.role)
            counters = self.counters[key]
            endpoints.append({
                "name": e.name,
                "role": e.role.value,
                "route": e.route.value,
                "addr": str(self.source_addresses.get(e.name, e.addr)) if e.role is Role.SOURCE else str(e.addr),
                "refused": self.refused.get(key),
                "peers": [peer_view(key, self.peers[h]) for h in self.matches.get(key, {}) if h in self.peers],
                "bytes_in": counters.to_stream,
                "bytes_out": counters.from_stream,
                "active_connections": counters.active,
                "refused_connections": self.refused_connections[key],
                "total_connections": counters.total,
            })
        return {
            "role": "client",
            "id": self.hash.hex()[:12],
            "counters": {"handshake_failures": self.handshake_failures,
                         "refused_connections": sum(self.refused_connections.values())},
            "control": {"addr": str(self.settings.server_addr), "connected": self.control_connected},
            "observed_addr": str(self.observed) if self.observed else None,
            "direct_addr": str(self.endpoint.local_address) if self.endpoint else None,
            "endpoints": endpoints,
        }

"""Peers and their direct paths: the clients control matched with this one, and one proven
QUIC connection per peer, dialed in parallel from the socket that reaches control (both
ends dial at once, which is what opens the NAT mappings) or accepted from the peer.

Streams the peer opens on a direct connection go to ``serve_stream`` (the destinations).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from connet_core.addresses import DialLimiter
from connet_core.client.birthday_probe import BindExtra, close_with, own_nat, peer_nat, probe_as_easy, probe_as_hard, roles
from connet_core.client.state import (
    HANDSHAKE_STEP_TIMEOUT,
    UNKNOWN_PEER_GRACE,
    ClientState,
    Peer,
    PeerConnection,
    local_route,
    prove_over,
    role_of,
)
from connet_core.component import Backoff, spawn
from connet_core.config import ClientSettings
from connet_core.errors import ConnectionLost, DialError, ProtocolError, StreamReset
from connet_core.model import HostPort, PathKind, RoutePolicy, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.identity import Accepted, Authorize, Refused
from connet_core.protocol.identity_io import verify
from connet_core.protocol import birthday
from connet_core.protocol.messages import ALPN_PEER, PeersUpdate
from connet_core.protocol.streams import MessageStream
from connet_core.supervise import TaskGroup, attempt, checkpoint, close_code, contained, describe
from connet_core.transport import Connection, Endpoint, Stream, Trust

log = logging.getLogger("connet.client")

UNMATCHED_GRACE = 10.0  # a peer control no longer lists keeps its connection this long (control restarts)

ServeStream = Callable[[Peer, PeerConnection, Stream], Awaitable[None]]


# ---- the identity proof on a direct connection ---------------------------------------------


async def verify_dialer(
    conn: Connection, local_hash: bytes, known_peer: Callable[[bytes], Awaitable[Peer | None]],
    count_failure: Callable[[], None],
) -> Peer | None:
    """The listener's half: the matched peer whose key the dialer proved, or None after
    closing ``conn`` with the reason (nothing is served before the proof)."""
    address = conn.remote_address
    try:
        stream = await asyncio.wait_for(conn.accept_stream(), HANDSHAKE_STEP_TIMEOUT)
    except (TimeoutError, ConnectionLost, StreamReset):
        conn.close(CloseCode.TIMEOUT, "no proof")
        return None

    async def matched(request: Authorize) -> Peer | Refused:
        # asked at Hello: an unknown certificate is refused before any challenge
        peer = await known_peer(request.hash)
        return peer if peer is not None else Refused(CloseCode.UNKNOWN_PEER, "unknown peer")

    outcome = await verify(MessageStream(stream), listener_hash=local_hash, alpn=ALPN_PEER, authorize=matched,
                           step_timeout=HANDSHAKE_STEP_TIMEOUT)
    if isinstance(outcome, Accepted):
        return outcome.context  # type: ignore[return-value]
    if outcome.code == CloseCode.UNKNOWN_PEER:
        count_failure()
        log.warning("connection from %s with a certificate no matched peer announced", address)
    elif outcome.code == CloseCode.PROOF_FAILED:
        count_failure()
        peer = await known_peer(outcome.hash) if outcome.hash else None
        log.warning("peer %s at %s failed the identity proof", peer.label if peer else "?", address)
    elif outcome.code != CloseCode.TIMEOUT and not outcome.by_peer:
        log.warning("peer at %s: %s", address, outcome.reason)
    conn.close(outcome.code, outcome.reason)
    return None


# ---- peers -----------------------------------------------------------------------------------


class Peers:
    """The matched peers (``state.matches``, ``state.peers``) and their direct connections."""

    def __init__(self, settings: ClientSettings, state: ClientState, endpoint: Endpoint, tg: asyncio.TaskGroup, *,
                 serve_stream: ServeStream, bind_extra: BindExtra | None = None) -> None:
        self._settings = settings
        self._state = state
        self._endpoint = endpoint
        self._tg = tg
        self._serve_stream = serve_stream
        self._dial_limiter = DialLimiter()
        self._bind_extra = bind_extra  # a dial-only endpoint on a given port (birthday probing)
        self._birthday_at: dict[bytes, float] = {}  # peer hash -> when its last attempt started

    async def update(self, update: PeersUpdate) -> None:
        """Control's list of the peers matched under one name and role."""
        state = self._state
        key = (update.name, role_of(update.role))
        fresh = {certificate_hash(p.certificate): p for p in update.peers if p.certificate != state.identity.certificate}
        stale = set(state.matches.get(key, {})) - set(fresh)
        state.matches[key] = fresh
        state.refused.pop(key, None)
        for peer_hash, info in fresh.items():
            peer = state.peers.get(peer_hash)
            if peer is None:
                peer = state.peers[peer_hash] = Peer(info.certificate, peer_hash)
            if key not in peer.matched:  # once per name and role, not per update
                log.info("peer %s matched for %s %r", peer.label, key[1].value, key[0], extra={"endpoint": key[0]})
            peer.matched[key] = info
            peer.unmatched_since = None
            peer.changed.set()
            self._ensure_dialer(peer)
            self._ensure_birthday(peer)
        for peer_hash in stale:
            peer = state.peers[peer_hash]
            peer.matched.pop(key, None)
            peer.changed.set()
            if not peer.matched:
                # no new streams; open ones finish. Its connection stays a while, so a
                # control restart (every list briefly empty) does not cut the tunnels.
                # Dials stop: the addresses were only worth dialing as that peer's.
                peer.unmatched_since = time.monotonic()
                if peer.dialer is not None:
                    peer.dialer.cancel()
        await state.notify_paths()

    async def retire_unmatched(self) -> None:
        """Forget the peers control stopped listing, once the grace is over and they are idle."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for peer in list(self._state.peers.values()):
                since = peer.unmatched_since
                if since is not None and now - since > UNMATCHED_GRACE and not peer.busy():
                    self._forget(peer)

    def _forget(self, peer: Peer) -> None:
        log.info("peer %s is gone", peer.label)
        del self._state.peers[peer.hash]
        # and its end-to-end TLS contexts: a restarted peer comes back with a new certificate,
        # so keeping them would grow the cache with every restart of a relayed peer
        self._state.tls.forget(peer.certificate)
        if peer.dialer is not None:
            peer.dialer.cancel()
        for pc in peer.connections:
            pc.conn.close(CloseCode.OK, "peer withdrawn")

    # ---- dialing ---------------------------------------------------------------------------

    def _wants_direct(self, peer: Peer) -> bool:
        for (name, role), info in peer.matched.items():
            local = local_route(self._settings, name, role)
            if local.allows(PathKind.DIRECT) and RoutePolicy(info.route).allows(PathKind.DIRECT):
                return True
        return False

    def _ensure_dialer(self, peer: Peer) -> None:
        if peer.dialer is None or peer.dialer.done():
            peer.dialer = spawn(self._tg, self._keep_direct(peer))

    def _ensure_birthday(self, peer: Peer) -> None:
        """Start birthday probing with ``peer`` when one NAT is hard and the other easy (once
        per ATTEMPT_INTERVAL): ``birthday_probe`` plays our side, the peer plays its own."""
        own, theirs = own_nat(self._state, self._endpoint.local_address.port), peer_nat(peer)
        role = roles(own, theirs)
        addresses = peer.addresses()  # control's observation of the peer comes first
        if not self._wants_direct(peer):
            return
        if own == theirs == "hard" and peer.hash not in self._birthday_at:
            self._birthday_at[peer.hash] = float("-inf")  # said once per peer
            log.info("peer %s: both NATs map per destination (hard): no direct path without a port mapping "
                     "on either router; the relay carries the tunnel", peer.label)
        ip = addresses[0].ip() if addresses else None
        if role is None or self._bind_extra is None or ip is None or ip.version != 4:
            return  # (IPv6 has no NAT to meet through; the probe sockets are IPv4)
        now = time.monotonic()
        last = self._birthday_at.get(peer.hash)
        if peer.active() is not None or (last is not None and now - last < birthday.ATTEMPT_INTERVAL):
            return
        self._birthday_at[peer.hash] = now
        log.debug("peer %s: birthday probing as the %s side", peer.label, role)
        spawn(self._tg, self._birthday(peer, role, addresses[0]), f"birthday probing with peer {peer.label}", log)

    async def _birthday(self, peer: Peer, role: str, address: HostPort) -> None:
        if role == "easy":
            await probe_as_easy(self._state, self._endpoint, peer, address.host)
            return
        assert self._bind_extra is not None
        found = await probe_as_hard(self._state, peer, address, self._bind_extra)
        if found is not None:
            conn, endpoint = found
            spawn(self._tg, close_with(conn, endpoint))
            self._adopt(peer, conn, dialer_hash=self._state.identity.hash)

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
                if await self._dial(peer):
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

    async def _dial(self, peer: Peer) -> bool:
        """One round: every allowed candidate address at once. Whether one was proven."""
        endpoint = self._endpoint
        identity = self._state.identity
        trust = Trust(pinned_der=peer.certificate)
        winner: list[Connection] = []

        async def dial_one(address: HostPort) -> None:
            try:
                conn = await endpoint.dial(address, alpn=ALPN_PEER, trust=trust, timeout=self._state.dial_timeout)
            except DialError as exc:
                log.debug("dial peer %s at %s failed: %s", peer.label, address, exc)
                return
            try:
                await prove_over(conn, identity, ALPN_PEER)
            except (ConnectionLost, StreamReset, ProtocolError) as exc:
                self._state.handshake_failures += 1
                log.warning("peer %s at %s refused our proof: %s", peer.label, address, exc)
                conn.close(CloseCode.PROOF_FAILED)
                return
            except BaseException as exc:  # the dialer was cancelled (peer withdrawn, stopping)
                conn.close(close_code(exc), "dial abandoned")
                raise
            winner.append(conn)
            self._adopt(peer, conn, dialer_hash=identity.hash)

        dialed: set[HostPort] = set()

        def start_new(tg: asyncio.TaskGroup) -> list[asyncio.Task]:
            now = time.monotonic()
            fresh = [a for a in peer.addresses() if a not in dialed and self._dial_limiter.allow(a, now)]
            if fresh:
                log.debug("dialing peer %s at %s", peer.label, ", ".join(map(str, fresh)))
            dialed.update(fresh)
            return [tg.create_task(dial_one(address)) for address in fresh]

        async with TaskGroup() as tg:
            running = start_new(tg)
            # an address that arrives during the round (a router mapping the peer got, its
            # re-announcement) is dialed at once rather than after the others time out
            while not winner and any(not t.done() for t in running):
                peer.changed.clear()
                news = tg.create_task(peer.changed.wait())
                await asyncio.wait([news, *running], return_when=asyncio.FIRST_COMPLETED)
                news.cancel()
                running = [t for t in running if not t.done()] + start_new(tg)
        return bool(dialed) and bool(winner)

    # ---- accepting -------------------------------------------------------------------------

    async def accept(self) -> None:
        """Take the connections peers dial to us; each proves its key before it is used."""
        while True:
            try:
                conn = await self._endpoint.accept()
            except ConnectionLost:
                return  # the endpoint closed: nothing more will arrive
            spawn(self._tg, self._verify(conn), "incoming peer connection", log)

    async def _known_peer(self, peer_hash: bytes) -> Peer | None:
        """The peer with this certificate, waiting a little: its dial can overtake control's news."""
        state = self._state
        if not await state.wait_until(lambda: peer_hash in state.peers, UNKNOWN_PEER_GRACE):
            return None
        return state.peers[peer_hash]

    def _count_failure(self) -> None:
        self._state.handshake_failures += 1

    async def _verify(self, conn: Connection) -> None:
        peer = await verify_dialer(conn, self._state.identity.hash, self._known_peer, self._count_failure)
        if peer is not None:
            self._adopt(peer, conn, dialer_hash=peer.hash)

    # ---- proven connections ----------------------------------------------------------------

    def _adopt(self, peer: Peer, conn: Connection, dialer_hash: bytes) -> None:
        """A proven connection joins the peer. When both dials succeeded, both ends keep the
        one dialed by the lower certificate hash and let the other drain and close."""
        if self._state.peers.get(peer.hash) is not peer:
            conn.close(CloseCode.OK, "peer withdrawn")
            return
        pc = PeerConnection(conn, dialer_hash)
        had_path = any(not c.draining for c in peer.connections)
        peer.connections.append(pc)
        preferred = min(self._state.identity.hash, peer.hash)
        peer.connections.sort(key=lambda c: (c.dialer_hash != preferred, c.since))
        for extra in peer.connections[1:]:
            if not extra.draining:
                # no new streams; both ends stop its keepalive, so it idles out once its last
                # stream is delivered (closing it now would cut streams still in flight)
                extra.draining = True
                extra.conn.stop_keepalive()
        # Both ends dial every candidate address and accept the other's dials: one info line
        # when the peer gets a direct path, the other proven connections (kept as spares
        # until they idle out) at debug.
        log.log(
            logging.DEBUG if had_path else logging.INFO,
            "peer %s connected direct via %s (%s)", peer.label, conn.remote_address,
            "dialed" if conn.is_dialer else "accepted",
            extra={"peer": str(conn.remote_address), "path": "direct"},
        )
        peer.changed.set()
        spawn(self._tg, self._serve(peer, pc), f"peer {peer.label}", log)
        spawn(self._tg, self._state.notify_paths())

    async def _serve(self, peer: Peer, pc: PeerConnection) -> None:
        """Serve streams the peer opens (it is a source for one of our destinations)."""
        try:
            while True:
                stream = await pc.conn.accept_stream()
                spawn(self._tg, self._serve_stream(peer, pc, stream), f"stream from peer {peer.label}", log)
        except ConnectionLost as exc:
            if pc in peer.connections:
                peer.connections.remove(pc)
            if not pc.draining:
                log.info(
                    "peer %s direct path via %s closed: %s", peer.label, pc.conn.remote_address,
                    CloseCode.describe(exc.code), extra={"peer": str(pc.conn.remote_address)},
                )
            peer.changed.set()

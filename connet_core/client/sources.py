"""Sources: the TCP listeners of this client's sources. Each accepted connection is tunneled
over the best path to a matched destination that works (direct to the peer, or through a
relay with TLS end to end), or refused with a reset when there is none."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import replace

from connet_core.client.balance import Balancer, Choice
from connet_core.client.state import ClientState, Peer, PeerConnection, RelayLink
from connet_core.component import Backoff, spawn
from connet_core.config import EndpointSettings
from connet_core.errors import ConfigError, ConnectionLost, PluginError, ProtocolError, StreamReset
from connet_core.forward import accept_tcp, pump, reset_tcp
from connet_core.logs import log_listening
from connet_core.model import HostPort, PathCandidate, PathKind, Role, RoutePolicy
from connet_core.plugins import Hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Connect, Connected, ConnectRefused
from connet_core.protocol.streams import MessageStream
from connet_core.supervise import attempt, describe, pause
from connet_core.tls_stream import TLSStream
from connet_core.transport import Connection, Stream

log = logging.getLogger("connet.client")

PATH_WAIT = 5.0  # a source connection waits this long for a first path
# A stream request moves on to the next path once its connection has heard nothing for this
# long: with keepalives every second, two silent seconds mean a dead path (the idle timeout
# declares it at three). A path that is merely busy keeps being heard, and gets up to
# REPLY_TIMEOUT, as does the last path.
DEAD_PATH_SILENCE = 2.0
REPLY_TIMEOUT = 15.0

Via = PeerConnection | RelayLink  # what carries a tunneled stream: a direct connection or a relay link
Origin = tuple[str, str]  # the TCP client's host:port, and the host:port it connected to


def listen_source(source: EndpointSettings, state: ClientState) -> socket.socket:
    """The socket of ``source``, listening TCP or UDP by its protocol; its bound address goes
    to ``state.source_addresses``. Raises ConfigError with one line when the address cannot
    be used."""
    udp = source.protocol == "udp"
    host = source.addr.host or None
    try:
        infos = socket.getaddrinfo(host, source.addr.port, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"source {source.name!r}: cannot resolve addr {source.addr}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        if not udp:
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        # the one line the user sees (exit 2): which source, which address, what the OS said
        raise ConfigError(f"source {source.name!r}: cannot listen on {source.addr}{' (udp)' if udp else ''}: "
                          f"{exc.strerror or exc}") from None
    sock.setblocking(False)
    name = sock.getsockname()
    bound = HostPort(name[0], name[1])
    state.source_addresses[source.name] = bound
    log_listening(log, "source", source.protocol, bound)
    return sock


class Sources:
    """Accepts the sources' TCP connections and tunnels each over a path."""

    def __init__(self, state: ClientState, hooks: Hooks, tg: asyncio.TaskGroup) -> None:
        self._state = state
        self._hooks = hooks
        self._tg = tg
        self._balancers: dict[str, Balancer] = {}  # by source name

    async def accept(self, source: EndpointSettings, sock: socket.socket) -> None:
        """Accept on ``sock`` until stopped; a failed accept is retried, the listener stays."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.1, 2.0)
        while True:
            with attempt() as tried:
                conn, _ = await loop.sock_accept(sock)
                backoff.reset()
                if spawn(self._tg, self._serve_connection(source, conn), f"source {source.name!r} connection", log) is None:
                    reset_tcp(conn)  # accepted as the client stops: cut, and say so (RST)
            if tried.error is not None:  # out of file descriptors, say: the listener stays
                log.warning("source %r: accepting a connection failed: %s; retrying", source.name,
                            describe(tried.error), extra={"endpoint": source.name})
                await pause(backoff.next_delay())

    # ---- choosing a path -------------------------------------------------------------------

    def _paths(self, source: EndpointSettings) -> tuple[list[PathCandidate], str | None]:
        """Usable paths for a new connection, best first, or why there are none."""
        state = self._state
        key = (source.name, Role.SOURCE)
        matched = state.matches.get(key, {})
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
            state.relays[h] for h in state.relays_for.get(key, set())
            if h in state.relays and state.relays[h].up() and state.relays[h].grants.get(key) in state.relays[h].presented
        ]
        for peer_hash, remote in routable.items():
            peer = state.peers.get(peer_hash)
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
        ordered = self._hooks.select_routes(source.name, source.route, remote_policy, candidates)
        if not ordered:
            return [], f"no path to {source.name!r} is up yet"
        return ordered, None

    async def _wait_paths(self, source: EndpointSettings) -> tuple[list[PathCandidate], str | None]:
        changed = self._state.paths_changed
        deadline = time.monotonic() + PATH_WAIT
        async with changed:
            while True:
                paths, why = self._paths(source)
                remaining = deadline - time.monotonic()
                if paths or (why or "").startswith("no route") or remaining <= 0:
                    return paths, why
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    pass  # one last look above

    # ---- one tunneled connection -----------------------------------------------------------

    async def _serve_connection(self, source: EndpointSettings, sock: socket.socket) -> None:
        try:
            origin = _origin(sock)  # for the destination's PROXY protocol header
            end = await accept_tcp(sock)
        except BaseException:
            sock.close()
            raise
        try:
            opened = await self._open_some_path(source, origin)
        except BaseException:
            end.abort()  # stopping: the program must not take an empty answer for a complete one
            raise
        if opened is None:
            end.abort()  # refused: a reset, not an empty answer
            return
        stream, initial, via, peer = opened
        balancer = self._balancer(source)
        balancer.opened(peer.hash)
        try:
            await pump(end, stream, self._state.counters[(source.name, Role.SOURCE)], initial)
        finally:
            via.active_streams -= 1
            balancer.closed(peer.hash)

    def _balancer(self, source: EndpointSettings) -> Balancer:
        balancer = self._balancers.get(source.name)
        if balancer is None:
            balancer = self._balancers[source.name] = Balancer(source.lb_policy, source.lb_retry, source.lb_retry_max)
        return balancer

    async def _open_some_path(self, source: EndpointSettings, origin: Origin, request: Connect | None = None
                              ) -> tuple[Stream, bytes, Via, Peer] | None:
        """A tunneled stream to the destination the balancer picks, over its best path that
        works, or None (the log says why).

        Destinations are tried in the balancer's order while its budget (lb-retry) allows,
        each over its paths best first. When a path's connection vanished under the request
        (a duplicate closed by the other side, a path that just died), the choice is made
        again: no TCP byte has been read yet, so nothing is lost by retrying. ``request``: a
        UDP flow's stream request (connet_core.client.udp_source) instead of a TCP one."""
        refused = self._state.refused_connections
        balancer = self._balancer(source)
        budget = balancer.budget(time.monotonic())
        failed: set[bytes] = set()  # destinations that refused or timed out: not asked again
        for _ in range(3):
            try:
                paths, why = await self._wait_paths(source)
            except PluginError as exc:
                # the route plugin failed for this connection: refuse it, keep the listener
                paths, why = [], str(exc)
            by_peer: dict[bytes, list[PathCandidate]] = {}
            for path in paths:
                by_peer.setdefault(path.key[0].hash, []).append(path)
            if not paths or not set(by_peer) - failed:
                log.warning("source %r: refusing a connection: %s", source.name, why or "every destination failed",
                            extra={"endpoint": source.name})
                refused[(source.name, Role.SOURCE)] += 1
                return None
            choices = [Choice(h, ps[0].rtt, ps[0].kind is PathKind.DIRECT) for h, ps in by_peer.items() if h not in failed]
            order = balancer.order(choices, time.monotonic())
            vanished = False
            for rank, peer_hash in enumerate(order):
                if not budget.may_try(time.monotonic()):
                    break
                last_peer = rank == len(order) - 1 or budget.is_last()
                budget.tried()
                opened, went_away = await self._try_destination(source, by_peer[peer_hash], last_peer, origin, request)
                if opened is not None:
                    return opened
                if went_away:
                    vanished = True  # its path vanished under the request: ask again below
                else:
                    failed.add(peer_hash)
                    balancer.failed(peer_hash, time.monotonic())
            if not vanished or not budget.may_try(time.monotonic()):
                break
        log.warning("source %r: no destination accepted the connection", source.name, extra={"endpoint": source.name})
        refused[(source.name, Role.SOURCE)] += 1
        return None

    async def _try_destination(self, source: EndpointSettings, paths: list[PathCandidate], last: bool,
                               origin: Origin, request: Connect | None = None
                               ) -> tuple[tuple[Stream, bytes, Via, Peer] | None, bool]:
        """One destination over its paths, best first: the opened stream (or None), and
        whether a path vanished under the request rather than being refused or timing out."""
        vanished = False
        for index, path in enumerate(paths):
            peer, via = path.key
            via.active_streams += 1
            try:
                opened = await self._open_path(source, peer, via, last and index == len(paths) - 1, origin, request)
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
                via.active_streams -= 1
                continue
            log.debug(
                "source %r: connection via %s path to peer %s%s", source.name, path.kind.value, peer.label,
                f" (relay {path.relay})" if path.relay else "", extra={"endpoint": source.name, "path": path.kind.value},
            )
            return (*opened, via, peer), False
        return None, vanished

    async def _open_path(self, source: EndpointSettings, peer: Peer, via: Via, last: bool,
                         origin: Origin, request: Connect | None = None) -> tuple[Stream, bytes] | None:
        """Open a tunneled stream to ``peer``'s destination ``name``: the stream to pump and
        the bytes already read past the reply, or None if the destination refused. A stream
        given up on is reset, so the destination stops working on it too."""
        assert via.conn is not None
        raw = await via.conn.open_stream()
        try:
            opened = await self._request(source, peer, via, raw, last, origin, request)
        except (ProtocolError, TimeoutError):
            raw.reset(CloseCode.TIMEOUT)
            raise
        if opened is None:
            raw.reset(CloseCode.OK)
        return opened

    async def _request(self, source: EndpointSettings, peer: Peer, via: Via, raw: Stream, last: bool,
                       origin: Origin, request: Connect | None = None) -> tuple[Stream, bytes] | None:
        assert via.conn is not None
        name = source.name
        # dial-timeout: how long this destination may take to accept, before the next is tried
        timeout = source.dial_timeout or REPLY_TIMEOUT
        client_addr, client_dest = origin
        stream = raw
        if isinstance(via, RelayLink):
            hop = MessageStream(raw)
            # the relay hands the client's address on to the destination (the PROXY header)
            protocol = request.protocol if request is not None else "tcp"  # a UDP flow's key stays inside TLS
            await hop.send(Connect(name, peer=peer.hash, client_addr=client_addr, client_dest=client_dest,
                                   protocol=protocol))
            relayed = await _reply(hop, via.conn, last, timeout)
            if isinstance(relayed, ConnectRefused):
                log.warning("relay %s refused %r: %s", via.label, name, CloseCode.describe(relayed.code),
                            extra={"endpoint": name})
                return None
            stream = TLSStream(raw, server_side=False, contexts=self._state.tls, peer_der=peer.certificate,
                               initial=hop.take_remaining())
            await asyncio.wait_for(stream.handshake(), timeout)
            messages = MessageStream(stream)
            if request is not None:  # a UDP flow's key, where only the destination reads it
                await messages.send(request)
        else:
            messages = MessageStream(stream)
            # QUIC protects a direct UDP flow: no key
            await messages.send(replace(request, key=b"") if request is not None
                                else Connect(name, client_addr=client_addr, client_dest=client_dest))
        reply = await _reply(messages, via.conn, last, timeout)
        if isinstance(reply, ConnectRefused):
            log.warning("source %r: peer %s refused: %s", name, peer.label, CloseCode.describe(reply.code),
                        extra={"endpoint": name})
            return None
        return stream, messages.take_remaining()


def _origin(sock: socket.socket) -> Origin:
    """Where the TCP client connected from and to, as host:port ("" if the socket cannot say)."""
    try:
        peer, local = sock.getpeername(), sock.getsockname()
    except OSError:
        return "", ""
    return str(HostPort(peer[0], peer[1])), str(HostPort(local[0], local[1]))


async def _reply(messages: MessageStream, conn: Connection, last: bool,
                 timeout: float = REPLY_TIMEOUT) -> Connected | ConnectRefused:
    """The reply to a stream request. Unless this is the ``last`` path, give up once the
    connection has been silent for DEAD_PATH_SILENCE (the path died); a busy path that
    is still heard from gets up to ``timeout`` (REPLY_TIMEOUT or the source's
    dial-timeout), like the last one."""
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
            if now - started >= timeout or (not last and now - heard_at >= DEAD_PATH_SILENCE):
                raise TimeoutError(f"no reply within {now - started:.1f}s")
    finally:
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)

"""Destinations: streams a matched source opens to us, over a direct connection or through
a relay (then with TLS end to end), each tunneled to the destination's TCP address. A
stream from a peer control did not match for that name, or over a route the destination
does not allow, is refused with a code."""

from __future__ import annotations

import asyncio
import logging

from connet_core import proxy_protocol
from connet_core.client.udp_destination import UdpDestinations
from connet_core.client.state import (
    HANDSHAKE_STEP_TIMEOUT,
    UNKNOWN_PEER_GRACE,
    ClientState,
    Peer,
    PeerConnection,
    RelayLink,
)
from connet_core.config import ClientSettings, EndpointSettings
from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.forward import dial_tcp, pump
from connet_core.model import PathKind, Role
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Connect, Connected, PeerInfo
from connet_core.protocol.streams import MessageStream, refuse_connect
from connet_core.supervise import describe
from connet_core.tls_stream import TLSStream
from connet_core.transport import Stream

log = logging.getLogger("connet.client")

DESTINATION_DIAL_TIMEOUT = 5.0


class Destinations:
    """Serves the streams sources open to this client's destinations."""

    def __init__(self, settings: ClientSettings, state: ClientState) -> None:
        self._by_name = {d.name: d for d in settings.destinations}
        self._state = state
        self._udp = UdpDestinations(settings.destinations, state.udp_counters, state.muxes)  # docs/udp.md

    async def _matched_source(self, name: str, peer_hash: bytes) -> PeerInfo | None:
        """The source ``peer_hash`` as control matched it to our destination ``name``, waiting
        a little: its stream can overtake control's news (after a control restart, say)."""
        key = (name, Role.DESTINATION)
        matches = self._state.matches
        if not await self._state.wait_until(lambda: peer_hash in matches.get(key, {}), UNKNOWN_PEER_GRACE):
            return None
        return matches[key][peer_hash]

    async def serve_direct_stream(self, peer: Peer, pc: PeerConnection, stream: Stream) -> None:
        """A stream ``peer`` opened on its direct connection ``pc``."""
        messages = MessageStream(stream)
        try:
            request = await messages.recv(Connect, timeout=HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset) as exc:
            log.debug("stream from peer %s: %s", peer.label, exc)
            stream.reset(exc.code)
            return
        destination = self._by_name.get(request.name)
        refusal: tuple[int, str] | None = None
        if destination is None:
            refusal = (CloseCode.NOT_FOUND, "no such destination")
        elif await self._matched_source(request.name, peer.hash) is None:
            refusal = (CloseCode.FORBIDDEN, "peer not matched for this name")
        elif not destination.route.allows(PathKind.DIRECT):
            refusal = (CloseCode.NO_ROUTE, "destination does not allow direct")
        if refusal is not None:
            log.warning("peer %s asked for %r: refused (%s)", peer.label, request.name, refusal[1], extra={"endpoint": request.name})
            await refuse_connect(messages, stream, *refusal)
            return
        assert destination is not None
        if "udp" in (request.protocol, destination.protocol):
            pc.active_streams += 1
            try:
                await self._udp.serve_direct(destination, request.protocol, peer.label, messages, stream, pc.conn)
            finally:
                pc.active_streams -= 1
            return
        await self._connect(destination, messages, stream, pc, request)

    async def serve_relayed_stream(self, link: RelayLink, stream: Stream) -> None:
        """A source reaches one of our destinations through the relay: TLS end to end."""
        messages = MessageStream(stream)
        try:
            request = await messages.recv(Connect, timeout=HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset) as exc:
            stream.reset(exc.code)
            return
        destination = self._by_name.get(request.name)
        source = await self._matched_source(request.name, request.peer) if destination is not None else None
        if destination is None or source is None or not destination.route.allows(PathKind.RELAY):
            log.warning("relay %s brought a stream for %r from an unmatched peer or a route we do not allow",
                        link.label, request.name, extra={"endpoint": request.name})
            stream.reset(CloseCode.FORBIDDEN)
            return
        tls = TLSStream(stream, server_side=True, contexts=self._state.tls, peer_der=source.certificate,
                        initial=messages.take_remaining())
        try:
            await asyncio.wait_for(tls.handshake(), HANDSHAKE_STEP_TIMEOUT)
        except (ProtocolError, ConnectionLost, StreamReset, TimeoutError) as exc:
            log.warning("relayed stream for %r: end-to-end TLS failed: %s", request.name, exc, extra={"endpoint": request.name})
            stream.reset(CloseCode.PROOF_FAILED)
            return
        link.active_streams += 1
        try:
            if "udp" in (request.protocol, destination.protocol):
                if link.conn is not None:  # else the relay connection just closed, and the stream with it
                    await self._udp.serve_relayed(destination, request.protocol, request.peer.hex()[:12], tls,
                                                  link.conn)
                return
            await self._connect(destination, MessageStream(tls), tls, None, request)
        finally:
            link.active_streams -= 1

    async def _connect(
        self, destination: EndpointSettings, messages: MessageStream, stream: Stream, pc: PeerConnection | None,
        request: Connect,
    ) -> None:
        """Dial the destination's addr and tunnel; refuse the stream if it cannot connect."""
        name = destination.name
        timeout = destination.dial_timeout or DESTINATION_DIAL_TIMEOUT
        try:
            end = await asyncio.wait_for(dial_tcp(destination.addr.host, destination.addr.port), timeout)
        except (OSError, TimeoutError) as exc:
            log.warning("destination %r: cannot connect to %s: %s", name, destination.addr,
                        "no answer within %g s" % timeout if isinstance(exc, TimeoutError) else describe(exc),
                        extra={"endpoint": name})
            await refuse_connect(messages, stream, CloseCode.DESTINATION_UNREACHABLE, "cannot connect")
            return
        if destination.proxy_proto_version:
            # before any byte of the tunnel: the service reads the header first
            end.transport.write(proxy_protocol.header(destination.proxy_proto_version,
                                                      proxy_protocol.parse_addr(request.client_addr),
                                                      proxy_protocol.parse_addr(request.client_dest)))
        if pc is not None:
            pc.active_streams += 1
        try:
            await messages.send(Connected())
            await pump(end, stream, self._state.counters[(name, Role.DESTINATION)], messages.take_remaining())
        except (ConnectionLost, StreamReset, ProtocolError):
            end.abort()
        except BaseException:
            end.abort()  # stopping before the tunnel started: the service sees a reset too
            raise
        finally:
            if pc is not None:
                pc.active_streams -= 1



"""UDP destinations (docs/udp.md): each flow a source opens (a stream with
``Connect(protocol="udp")``) gets its own UDP socket connected to the destination's
``addr``, so the service's replies go back to the one sender they answer. The flow's
datagrams travel as DATAGRAM frames on the stream's connection, tagged with the stream's
id; through a relay they are sealed end to end with the key from the request. The flow
ends with its stream (the source resets it when the flow idles out) or its connection."""

from __future__ import annotations

import asyncio
import logging

from connet_core.client.udp_flows import DropLog, UdpCounters
from connet_core.client.udp_tunnel import FlowTunnel
from connet_core.config import EndpointSettings
from connet_core.datagram_mux import Muxes
from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.protocol import datagrams as codec
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Connect, Connected
from connet_core.protocol.streams import MessageStream, refuse_connect
from connet_core.supervise import describe
from connet_core.transport import Connection, Stream

log = logging.getLogger("connet.client")


def mismatch(destination: EndpointSettings, protocol: str) -> str | None:
    """Why a request of ``protocol`` cannot use ``destination``, or None."""
    if protocol == destination.protocol:
        return None
    return (f"a {protocol} source asked for the {destination.protocol} destination {destination.name!r} "
            f"(give both the same protocol)")


class _ServiceSocket(asyncio.DatagramProtocol):
    def __init__(self, flow: "_DestinationFlow") -> None:
        self._flow = flow

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._flow.from_service(data)

    def error_received(self, exc: OSError) -> None:
        # ICMP port unreachable for an earlier datagram: the service is not (yet) there
        self._flow.owner.drop("send_failed", f"the service at its addr: {describe(exc)}")


class _DestinationFlow:
    def __init__(self, owner: "UdpDestination") -> None:
        self.owner = owner
        self.tunnel: FlowTunnel | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def from_tunnel(self, payload: bytes | None) -> None:
        if payload is None:
            return
        counters = self.owner.counters
        counters.datagrams_from_tunnel += 1
        counters.bytes_from_tunnel += len(payload)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(payload)

    def from_service(self, data: bytes) -> None:
        counters = self.owner.counters
        counters.datagrams_to_tunnel += 1
        counters.bytes_to_tunnel += len(data)
        if self.tunnel is not None:
            self.tunnel.send(data)


class UdpDestination:
    """The flows of one UDP destination."""

    def __init__(self, destination: EndpointSettings, counters: UdpCounters, muxes: Muxes) -> None:
        self.name = destination.name
        self._destination = destination
        self.counters = counters
        self._muxes = muxes
        self._drops = DropLog()
        self._loop = asyncio.get_running_loop()

    def drop(self, cause: str, why: str) -> None:
        self.counters.drops[cause] += 1
        unlogged = self._drops.note(cause, self._loop.time())
        if unlogged is not None:
            more = f" ({unlogged} more since the last line)" if unlogged else ""
            log.warning("destination %r: dropped a datagram: %s%s", self.name, why, more,
                        extra={"endpoint": self.name})

    async def serve(self, messages: MessageStream, stream: Stream, conn: Connection, key: bytes | None) -> None:
        """One flow: a socket toward the service, then datagrams both ways until the
        stream ends. ``key``: relayed, the flow's end-to-end key."""
        addr = self._destination.addr
        flow = _DestinationFlow(self)
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _ServiceSocket(flow), remote_addr=(addr.host, addr.port))
        except OSError as exc:
            log.warning("destination %r: cannot reach %s (udp): %s", self.name, addr, describe(exc),
                        extra={"endpoint": self.name})
            await refuse_connect(messages, stream, CloseCode.DESTINATION_UNREACHABLE, "cannot reach the service")
            return
        flow.transport = transport
        tunnel = FlowTunnel(conn, stream, codec.FlowSeal(key, source_side=False) if key is not None else None,
                            self.drop)
        mux = self._muxes.of(conn)
        mux.register(tunnel.flow_id, lambda payload: flow.from_tunnel(tunnel.opened(payload)))
        self.counters.flows_active += 1
        self.counters.flows_total += 1
        try:
            await messages.send(Connected())
            flow.tunnel = tunnel
            await tunnel.read_records(flow.from_tunnel)
        except (ConnectionLost, StreamReset, ProtocolError):
            pass  # the path went before the flow started
        finally:
            self.counters.flows_active -= 1
            mux.unregister(tunnel.flow_id)
            transport.close()
            stream.reset(CloseCode.OK)


class UdpDestinations:
    """Where ``destinations.Destinations`` hands every stream request that is not TCP to a
    TCP destination: a UDP flow, or a request whose protocol the destination does not have
    (refused with PROTOCOL_MISMATCH and one line here; the source logs the refusal)."""

    def __init__(self, destinations: tuple[EndpointSettings, ...], counters: dict, muxes: Muxes) -> None:
        self._by_name = {
            d.name: UdpDestination(d, counters[(d.name, d.role)], muxes) for d in destinations if d.protocol == "udp"
        }

    async def _mismatched(self, destination: EndpointSettings, protocol: str, peer_label: str,
                          messages: MessageStream, stream: Stream) -> bool:
        why = mismatch(destination, protocol)
        if why is None:
            return False
        log.warning("peer %s: refused: %s", peer_label, why, extra={"endpoint": destination.name})
        await refuse_connect(messages, stream, CloseCode.PROTOCOL_MISMATCH, why)
        return True

    async def serve_direct(self, destination: EndpointSettings, protocol: str, peer_label: str,
                           messages: MessageStream, stream: Stream, conn: Connection) -> None:
        if not await self._mismatched(destination, protocol, peer_label, messages, stream):
            await self._by_name[destination.name].serve(messages, stream, conn, None)

    async def serve_relayed(self, destination: EndpointSettings, protocol: str, peer_label: str,
                            tls: Stream, conn: Connection) -> None:
        """After the end-to-end TLS handshake: the flow's own request, with its key, follows."""
        messages = MessageStream(tls)
        if await self._mismatched(destination, protocol, peer_label, messages, tls):
            return
        try:
            request = await messages.recv(Connect, timeout=5.0)
        except (ProtocolError, ConnectionLost, StreamReset, TimeoutError) as exc:
            log.debug("relayed udp flow for %r: %s", destination.name, exc)
            tls.reset(CloseCode.PROTOCOL_ERROR)
            return
        if len(request.key) != codec.KEY_SIZE:
            await refuse_connect(messages, tls, CloseCode.PROTOCOL_ERROR, "a relayed udp flow needs its key")
            return
        await self._by_name[destination.name].serve(messages, tls, conn, request.key)

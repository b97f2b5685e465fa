"""UDP sources (docs/udp.md): a source with ``protocol = "udp"`` listens on a UDP socket;
every remote address that sends to it is a *flow*. A flow opens one stream over the best
path that works (as a TCP connection would: routes, paths and refusals are the ones of
``sources.Sources``) with ``Connect(protocol="udp")``; the stream carries no bytes, it owns
the flow, and the flow's datagrams travel as DATAGRAM frames on the stream's connection,
tagged with its stream id (connet_core.protocol.datagrams). Through a relay they are sealed
end to end with a key the stream request carries inside the end-to-end TLS.

A flow ends after ``udp-idle-timeout`` without traffic either way (the stream is reset,
which tells the destination), when its stream or connection ends, or when the source
stops. Datagrams are never split or merged: one too large for the path is dropped and
counted."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from connet_core.client.sources import Sources
from connet_core.client.state import ClientState, RelayLink
from connet_core.client.udp_flows import DropLog, FlowTable, UdpCounters
from connet_core.client.udp_tunnel import FlowTunnel
from connet_core.component import spawn
from connet_core.config import EndpointSettings
from connet_core.datagram_mux import Muxes
from connet_core.model import Role
from connet_core.protocol import datagrams as codec
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Connect
from connet_core.supervise import pause

log = logging.getLogger("connet.client")

PENDING_LIMIT = 64  # datagrams a new flow holds while its path is being opened
NO_PATH_HOLD = 2.0  # a flow that found no path drops its sender's datagrams this long, then retries


@dataclass(eq=False)
class _Flow:
    sender: tuple
    pending: list[bytes] = field(default_factory=list)
    tunnel: FlowTunnel | None = None
    task: asyncio.Task | None = None
    failed: bool = False  # found no path: drops until it ends


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, source: "UdpSource") -> None:
        self._source = source

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self._source.from_sender(data, addr)

    def error_received(self, exc: OSError) -> None:
        # an ICMP error for an earlier reply (a sender that went away): nothing to do
        log.debug("source %r: %s", self._source.name, exc)


class UdpSource:
    """One UDP source: its socket, its flows, its counters."""

    def __init__(self, source: EndpointSettings, state: ClientState, sources: Sources, muxes: Muxes,
                 tg: asyncio.TaskGroup) -> None:
        self.name = source.name
        self._settings = source
        self._state = state
        self._sources = sources
        self._muxes = muxes
        self._tg = tg
        self._table: FlowTable[tuple, _Flow] = FlowTable(source.udp_max_flows, source.udp_idle_timeout)
        self.counters: UdpCounters = state.udp_counters[(source.name, Role.SOURCE)]
        self._drops = DropLog()
        self._transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()

    async def run(self, sock: socket.socket) -> None:
        """Serve the socket until stopped; expire idle flows."""
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Listener(self), sock=sock)
        self._transport = transport
        try:
            while True:
                now = self._loop.time()
                for flow in self._table.expire(now):
                    self._end(flow)
                due = self._table.next_expiry()
                await asyncio.sleep(min(1.0, max(0.05, due - now)) if due is not None else 1.0)
        finally:
            transport.close()
            for flow in self._table.flows():
                self._end(flow)

    # ---- datagrams from senders -------------------------------------------------------------

    def from_sender(self, data: bytes, sender: tuple) -> None:
        counters = self.counters
        counters.datagrams_to_tunnel += 1
        counters.bytes_to_tunnel += len(data)
        now = self._loop.time()
        flow = self._table.get(sender, now)
        if flow is None:
            flow = _Flow(sender)
            if not self._table.add(sender, flow, now):
                self.drop("flows_full", f"{self._table.max_flows} flows at once (udp-max-flows)")
                return
            flow.task = spawn(self._tg, self._run_flow(flow), f"source {self.name!r} udp flow", log)
            if flow.task is None:  # stopping
                self._table.remove(sender, flow)
                return
            counters.flows_active += 1
            counters.flows_total += 1
        if flow.failed:
            self.drop("no_path", "no path to a destination")
        elif flow.tunnel is None:
            if len(flow.pending) < PENDING_LIMIT:
                flow.pending.append(data)
            else:
                self.drop("queue_full", f"over {PENDING_LIMIT} datagrams while the flow's path opens")
        elif not flow.tunnel.send(data) and flow.tunnel.exhausted:
            self._end(flow)  # the sender's next datagram starts a flow with a new key

    def drop(self, cause: str, why: str) -> None:
        self.counters.drops[cause] += 1
        unlogged = self._drops.note(cause, self._loop.time())
        if unlogged is not None:
            more = f" ({unlogged} more since the last line)" if unlogged else ""
            log.warning("source %r: dropped a datagram: %s%s", self.name, why, more, extra={"endpoint": self.name})

    # ---- one flow ---------------------------------------------------------------------------

    async def _run_flow(self, flow: _Flow) -> None:
        key = codec.new_key()
        request = Connect(self.name, protocol="udp", key=key)
        opened = None
        try:
            opened = await self._sources._open_some_path(self._settings, ("", ""), request)  # no PROXY header for UDP
            if opened is None:
                flow.failed = True
                for _ in flow.pending:
                    self.drop("no_path", "no path to a destination")
                flow.pending.clear()
                await pause(NO_PATH_HOLD)
                return
            stream, _, via, peer = opened
            assert via.conn is not None
            balancer = self._sources._balancer(self._settings)  # load balancing counts flows as connections
            balancer.opened(peer.hash)
            seal = codec.FlowSeal(key, source_side=True) if isinstance(via, RelayLink) else None
            tunnel = FlowTunnel(via.conn, stream, seal, self.drop)
            mux = self._muxes.of(via.conn)
            mux.register(tunnel.flow_id, lambda payload: self._from_tunnel(flow, tunnel.opened(payload)))
            try:
                flow.tunnel = tunnel
                pending, flow.pending = flow.pending, []
                for data in pending:
                    tunnel.send(data)
                await tunnel.read_records(lambda datagram: self._from_tunnel(flow, datagram))
            finally:
                mux.unregister(tunnel.flow_id)
                stream.reset(CloseCode.OK)  # tells the destination the flow ended
                balancer.closed(peer.hash)
        finally:
            if opened is not None:
                opened[2].active_streams -= 1
            self._table.remove(flow.sender, flow)
            self.counters.flows_active -= 1

    def _from_tunnel(self, flow: _Flow, payload: bytes | None) -> None:
        transport = self._transport
        if payload is None or transport is None or transport.is_closing():
            return
        self.counters.datagrams_from_tunnel += 1
        self.counters.bytes_from_tunnel += len(payload)
        self._table.touch(flow.sender, self._loop.time())
        transport.sendto(payload, flow.sender)

    def _end(self, flow: _Flow) -> None:
        if flow.task is not None and not flow.task.done():
            flow.task.cancel()

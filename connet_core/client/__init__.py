"""The client: runs destinations and sources, keeps one proven QUIC connection per peer
client (dialed in parallel from the socket that reaches control), and tunnels TCP over it.

This module is the composition root: ``Client`` binds the sockets, owns the task group and
wires the parts, each of which has one job and shares only ``state.ClientState``:

- ``control_link``: the session with control; hands peer and relay updates on
- ``peers``: matched peers and their direct connections (dial, accept, identity proof)
- ``relays``: one connection per relay offered, with the grants control gave
- ``destinations``: streams from sources (direct or relayed) tunneled to a TCP address
- ``sources``: TCP listeners, each connection tunneled over the best path that works
- ``report``: the status answer

The parts call each other only through the callables passed in below.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Awaitable, Callable

from connet_core.client.carrier import Carrier
from connet_core.client.control_link import ControlLink
from connet_core.client.destinations import Destinations
from connet_core.client.peers import Peers
from connet_core.client.relays import Relays
from connet_core.client.report import client_status
from connet_core.client.sources import Sources, listen_source
from connet_core.client.udp_source import UdpSource
from connet_core.client.state import ClientState, Key, Peer, RelayLink
from connet_core.config import ClientSettings, EndpointSettings
from connet_core.errors import TransportError
from connet_core.logs import log_listening
from connet_core.model import HostPort
from connet_core.plugins import Hooks, load_hooks
from connet_core.portmap.mapper import PortMapper
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import ALPN_PEER, PeerInfo
from connet_core.component import spawn
from connet_core.supervise import TaskGroup
from connet_core.tls_stream import PinnedContexts
from connet_core.transport import Endpoint, TLSIdentity, TransportOptions

__all__ = ["Client"]

log = logging.getLogger("connet.client")


def _control_on_this_machine(settings: ClientSettings) -> bool:
    """Control on loopback (one machine: tests, demos): no router between us and anyone it
    matches us with, so no mapping to ask for and no packet to send to the router."""
    ip = settings.server_addr.ip()
    return (ip is not None and ip.is_loopback) or settings.server_addr.host == "localhost"


class Client:
    """``await Client(settings).run()`` serves until cancelled."""

    def __init__(self, settings: ClientSettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or load_hooks(settings.common.disable_plugins, plugin_settings=settings.common.plugins)
        self.state = ClientState(settings)
        self.endpoint: Endpoint | None = None
        self.started = asyncio.Event()  # set once every socket is bound and the parts run
        self._bind_extra: Callable[[int], Awaitable[Endpoint]] | None = None  # set by run()

    async def run(self) -> None:
        transport = self.hooks.transport(self.settings.common.transport)

        async def bind_extra(port: int) -> Endpoint:
            # birthday probing's hand-over: dial-only, on the port whose NAT mapping met the peer
            return await transport.bind(HostPort("0.0.0.0", port), identity=self.state.identity.tls, alpns=[])

        self._bind_extra = bind_extra
        try:
            self.endpoint = await transport.bind(self.settings.direct_addr, identity=self.state.identity.tls,
                                                 alpns=[ALPN_PEER], options=TransportOptions(
                                                     handshake_timeout=self.state.dial_timeout))
        except TransportError as exc:
            # the usual cause is a second client on the same machine: name the key to change
            raise TransportError(
                f"direct-addr: {exc} (another client on this machine? give each its own direct-addr)"
            ) from None
        log_listening(log, "direct", "udp", self.endpoint.local_address)
        listeners: list[socket.socket] = []
        try:
            # before any task starts: a source that cannot listen is a configuration error
            for source in self.settings.sources:
                listeners.append(listen_source(source, self.state))
            async with TaskGroup() as tg:
                self._start(tg, self.endpoint, listeners)
                self.started.set()
        finally:
            for sock in listeners:
                sock.close()
            await self.endpoint.close(CloseCode.SHUTDOWN, "shutdown")

    def _start(self, tg: asyncio.TaskGroup, endpoint: Endpoint, listeners: list[socket.socket]) -> None:
        """Build the parts, each handed the calls it makes into another, and start their loops."""
        settings, state = self.settings, self.state
        destinations = Destinations(settings, state)
        peers = Peers(settings, state, endpoint, tg, serve_stream=destinations.serve_direct_stream,
                      bind_extra=self._bind_extra)
        carrier = Carrier(endpoint, settings.udp)
        relays = Relays(state, endpoint, tg, serve_stream=destinations.serve_relayed_stream, carrier=carrier)
        sources = Sources(state, self.hooks, tg)
        control = ControlLink(settings, state, endpoint, on_peers=peers.update, on_relays=relays.update,
                              carrier=carrier)
        for source, sock in zip(settings.sources, listeners):
            if source.protocol == "udp":  # docs/udp.md
                tg.create_task(UdpSource(source, state, sources, state.muxes, tg).run(sock))
            else:
                tg.create_task(sources.accept(source, sock))
        tg.create_task(peers.accept())
        tg.create_task(control.run())
        tg.create_task(peers.retire_unmatched())
        if settings.port_mapping and not _control_on_this_machine(settings):
            # in the background: until (unless) the router answers, nothing waits for it
            mapper = PortMapper(endpoint.local_address.port, lambda: self._mapping_changed(mapper))
            spawn(tg, mapper.run(), "port mapping", log)

    def _mapping_changed(self, mapper: PortMapper) -> None:
        self.state.port_mapping = mapper.current
        self.state.candidates_changed.set()

    def status(self) -> dict:
        return {**client_status(self.settings, self.state, self.endpoint), "plugin_errors": self.hooks.error_report()}

    # ---- read-only views of the state, for embedding and tests -------------------------------

    @property
    def identity(self) -> TLSIdentity:
        return self.state.identity.tls

    @property
    def certificate(self) -> bytes:
        return self.state.identity.certificate

    @property
    def hash(self) -> bytes:
        return self.state.identity.hash

    @property
    def destinations(self) -> dict[str, EndpointSettings]:
        return {d.name: d for d in self.settings.destinations}

    @property
    def source_addresses(self) -> dict[str, HostPort]:
        return self.state.source_addresses

    @property
    def control_connected(self) -> bool:
        return self.state.control_connected

    @property
    def observed(self) -> HostPort | None:
        return self.state.observed

    @property
    def matches(self) -> dict[Key, dict[bytes, PeerInfo]]:
        return self.state.matches

    @property
    def peers(self) -> dict[bytes, Peer]:
        return self.state.peers

    @property
    def relays(self) -> dict[bytes, RelayLink]:
        return self.state.relays

    @property
    def tls(self) -> PinnedContexts:
        return self.state.tls

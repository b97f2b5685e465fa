"""The client's status: what ``GET /`` on its status address answers (docs/status.md,
docs/schemas/client.json). Read-only: a view of the shared state at this moment."""

from __future__ import annotations

import time

from connet_core.client.carrier import carrier_of
from connet_core.client.state import ClientState, Key, Peer, local_route
from connet_core.config import ClientSettings
from connet_core.model import PathKind, Role, RoutePolicy
from connet_core.transport import Endpoint


def client_status(settings: ClientSettings, state: ClientState, endpoint: Endpoint | None) -> dict:
    def relay_paths(key: Key, peer: Peer) -> list[dict]:
        info = peer.matched.get(key)
        local = local_route(settings, *key)
        if info is None or not (local.allows(PathKind.RELAY) and RoutePolicy(info.route).allows(PathKind.RELAY)):
            return []
        links = [state.relays[h] for h in state.relays_for.get(key, set()) if h in state.relays]
        return [
            {
                "kind": "relay",
                "addr": link.label,
                "carrier": carrier_of(link.conn),
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
                    "carrier": carrier_of(pc.conn),
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
    for e in (*settings.destinations, *settings.sources):
        key = (e.name, e.role)
        counters = state.counters[key]
        endpoints.append({
            "name": e.name,
            "role": e.role.value,
            "route": e.route.value,
            "addr": str(state.source_addresses.get(e.name, e.addr)) if e.role is Role.SOURCE else str(e.addr),
            "refused": state.refused.get(key),
            "peers": [peer_view(key, state.peers[h]) for h in state.matches.get(key, {}) if h in state.peers],
            "bytes_in": counters.to_stream,
            "bytes_out": counters.from_stream,
            "active_connections": counters.active,
            "refused_connections": state.refused_connections[key],
            "total_connections": counters.total,
        })
    return {
        "role": "client",
        "id": state.identity.hash.hex()[:12],
        "metadata": settings.metadata,
        "counters": {"handshake_failures": state.handshake_failures,
                     "refused_connections": sum(state.refused_connections.values())},
        "control": {"addr": str(settings.server_addr), "connected": state.control_connected,
                    "carrier": state.control_carrier if state.control_connected else None},
        "observed_addr": str(state.observed) if state.observed else None,
        "direct_addr": str(endpoint.local_address) if endpoint else None,
        "port_mapping": state.port_mapping.status(time.monotonic()) if state.port_mapping else None,
        "endpoints": endpoints,
        "relay_tls_contexts": len(state.tls),
    }

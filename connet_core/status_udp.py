"""The UDP tunnels' Prometheus metrics (docs/status.md, docs/udp.md), from the status JSON
of a client's udp endpoints and of a relay."""

from __future__ import annotations

from typing import Any


def udp_endpoint_metrics(m: Any, endpoint: dict, ident: dict[str, object]) -> None:
    """``m`` is status.MetricsBuilder; nothing for a tcp endpoint."""
    udp = endpoint.get("udp")
    if not isinstance(udp, dict):
        return
    m.add("connet_client_udp_flows", "gauge", "UDP flows open now (a source: one per remote sender).",
          udp.get("flows"), **ident)
    m.add("connet_client_udp_flows_total", "counter", "UDP flows since start.", udp.get("flows_total"), **ident)
    for direction in ("to_tunnel", "from_tunnel"):
        m.add("connet_client_udp_datagrams_total", "counter",
              "UDP datagrams into the tunnel (to_tunnel) and out of it (from_tunnel).",
              udp.get(f"datagrams_{direction}"), **ident, direction=direction)
        m.add("connet_client_udp_bytes_total", "counter",
              "UDP payload bytes into the tunnel (to_tunnel) and out of it (from_tunnel).",
              udp.get(f"bytes_{direction}"), **ident, direction=direction)
    drops = udp.get("drops")
    for cause, count in (drops.items() if isinstance(drops, dict) else ()):
        m.add("connet_client_udp_drops_total", "counter", "UDP datagrams dropped, by cause (docs/udp.md).",
              count, **ident, cause=cause)


def relay_udp_metrics(m: Any, report: dict) -> None:
    udp = report.get("udp")
    if not isinstance(udp, dict):
        return
    m.add("connet_relay_udp_flows", "gauge", "UDP flows being relayed now.", udp.get("flows"))
    m.add("connet_relay_udp_datagrams_total", "counter", "UDP datagrams relayed (sealed end to end).",
          udp.get("datagrams"))
    m.add("connet_relay_udp_bytes_total", "counter", "Bytes of the UDP datagrams relayed.", udp.get("bytes"))
    m.add("connet_relay_udp_dropped_total", "counter",
          "UDP datagrams the relay dropped: too large for the outgoing connection, or it closed.", udp.get("dropped"))

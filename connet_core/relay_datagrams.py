"""The relay's half of the UDP tunnels (docs/udp.md): while it splices a UDP flow's two
streams, the DATAGRAM frames tagged with one stream's id on one client connection go out
on the other connection tagged with the other stream's id. The payload is sealed end to
end (connet_core.protocol.datagrams.FlowSeal): the relay forwards what it cannot read."""

from __future__ import annotations

import contextlib
from typing import Iterator

from connet_core.datagram_mux import Muxes
from connet_core.protocol import datagrams as codec
from connet_core.transport import Connection


class RelayedFlows:
    def __init__(self) -> None:
        self.muxes = Muxes()
        self.flows_active = 0
        self.datagrams = 0
        self.bytes = 0
        self.dropped = 0  # too large for the outgoing path, or it closed

    def _forwarder(self, to: Connection, flow_id: int):  # type: ignore[no-untyped-def]
        def forward(payload: bytes) -> None:
            if to.datagrams.send(codec.encode(flow_id, payload)):
                self.datagrams += 1
                self.bytes += len(payload)
            else:
                self.dropped += 1
        return forward

    @contextlib.contextmanager
    def forwarding(self, protocol: str, a: Connection, a_id: int, b: Connection, b_id: int) -> Iterator[None]:
        """Forward the flow's datagrams both ways while the splice runs (nothing for TCP)."""
        if protocol != "udp":
            yield
            return
        mux_a, mux_b = self.muxes.of(a), self.muxes.of(b)
        mux_a.register(a_id, self._forwarder(b, b_id))
        mux_b.register(b_id, self._forwarder(a, a_id))
        self.flows_active += 1
        try:
            yield
        finally:
            self.flows_active -= 1
            mux_a.unregister(a_id)
            mux_b.unregister(b_id)

    def status(self) -> dict[str, int]:
        return {"flows": self.flows_active, "datagrams": self.datagrams, "bytes": self.bytes,
                "dropped": self.dropped}

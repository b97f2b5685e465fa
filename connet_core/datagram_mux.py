"""Datagrams of one connection to the UDP flows on it: each DATAGRAM frame starts with its
flow id (connet_core.protocol.datagrams), the id of the stream that opened the flow on
this connection. One mux per connection, shared by whatever has flows on it (a client's
sources and destinations, a relay's splices)."""

from __future__ import annotations

from typing import Callable
from weakref import WeakKeyDictionary

from connet_core.protocol import datagrams as codec
from connet_core.transport import Connection

Handler = Callable[[bytes], None]  # gets the payload after the flow id


class DatagramMux:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._flows: dict[int, Handler] = {}
        self.unknown = 0  # datagrams for no flow here (one that just ended, say)
        conn.datagrams.set_receiver(self._received)

    def register(self, flow_id: int, handler: Handler) -> None:
        self._flows[flow_id] = handler

    def unregister(self, flow_id: int) -> None:
        self._flows.pop(flow_id, None)

    def __len__(self) -> int:
        return len(self._flows)

    def _received(self, data: bytes) -> None:
        decoded = codec.decode(data)
        if decoded is None:
            self.unknown += 1
            return
        flow_id, payload = decoded
        handler = self._flows.get(flow_id)
        if handler is not None:
            handler(payload)
        elif flow_id != 0:  # 0: qh3's zero-filled keepalive filler, not a flow
            self.unknown += 1


class Muxes:
    """The mux of each connection, made when the first flow needs it."""

    def __init__(self) -> None:
        self._by_conn: WeakKeyDictionary[Connection, DatagramMux] = WeakKeyDictionary()

    def of(self, conn: Connection) -> DatagramMux:
        mux = self._by_conn.get(conn)
        if mux is None:
            mux = self._by_conn[conn] = DatagramMux(conn)
        return mux

"""One UDP flow's tunnel, the same at both ends: its datagrams as DATAGRAM frames on the
flow's connection (sealed end to end when relayed), or, for one too large for the frames
the connection carries now but at most STREAM_LIMIT, as a record on the flow's stream
(connet_core.protocol.datagrams). Drops go to the end's counters with their cause."""

from __future__ import annotations

import asyncio
from typing import Callable

from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.protocol import datagrams as codec
from connet_core.protocol.codes import CloseCode
from connet_core.transport import Connection, Stream

Drop = Callable[[str, str], None]  # (cause, why)


class FlowTunnel:
    def __init__(self, conn: Connection, stream: Stream, seal: codec.FlowSeal | None, drop: Drop) -> None:
        self.conn = conn
        self.stream = stream
        self.flow_id = stream.stream_id
        self.seal = seal
        self._drop = drop
        self._congested = False  # the stream's send buffer is full: records are dropped until it drains
        self.on_stream = 0  # datagrams sent as stream records
        self.exhausted = False  # 2**32 datagrams sealed under the flow's key: the source ends the flow

    def send(self, data: bytes) -> bool:
        """Send one datagram; False (and counted) if it was dropped."""
        payload = data
        if self.seal is not None and len(data) > codec.RELAYED_FRAME_LIMIT:
            return self._on_stream(data)  # the relay's other leg may not carry it in a frame
        if self.seal is not None:
            sealed = self.seal.seal(data)
            if sealed is None:
                self.exhausted = True
                return False
            payload = sealed
        if self.conn.datagrams.send(codec.encode(self.flow_id, payload)):
            return True
        if self.conn.closed:
            self._drop("path_closed", "its path closed")
            return False
        return self._on_stream(data)

    def _on_stream(self, data: bytes) -> bool:
        if len(data) > codec.STREAM_LIMIT:
            self._drop("too_large", f"{len(data)} bytes, larger than the path carries "
                       f"({max(self.frame_room(), codec.STREAM_LIMIT)} bytes now; docs/udp.md)")
            return False
        if self._congested:
            self._drop("queue_full", "the flow's stream is congested")
            return False
        try:
            if not self.stream.write_nowait(codec.record(data)):
                self._congested = True
                asyncio.get_running_loop().create_task(self._drained())
        except (ConnectionLost, StreamReset, ProtocolError):
            self._drop("path_closed", "its stream closed")
            return False
        self.on_stream += 1
        return True

    async def _drained(self) -> None:
        try:
            await self.stream.drain()
        except (ConnectionLost, StreamReset, ProtocolError):
            pass  # the flow is ending; its reader notices
        self._congested = False

    def frame_room(self) -> int:
        """The largest datagram one DATAGRAM frame carries on the connection now."""
        room = self.conn.datagrams.max_size() - codec.varint_size(self.flow_id)
        return max(0, room - (codec.SEAL_OVERHEAD if self.seal is not None else 0))

    def opened(self, payload: bytes) -> bytes | None:
        """A received frame's datagram, or None (counted) for one that does not authenticate."""
        if self.seal is None:
            return payload
        opened = self.seal.open(payload)
        if opened is None:
            self._drop("not_authentic", "a relayed datagram that did not authenticate")
        return opened

    async def read_records(self, deliver: Callable[[bytes], None]) -> None:
        """Deliver the datagrams that come as stream records until the stream ends (the
        other end ended the flow, or the path went); returns then."""
        reader = codec.RecordReader()
        try:
            while data := await self.stream.read():
                for datagram in reader.feed(data):
                    deliver(datagram)
        except (ConnectionLost, StreamReset, ProtocolError):
            pass  # the flow ends with its stream
        except ValueError:
            self.stream.reset(CloseCode.PROTOCOL_ERROR)  # a record over STREAM_LIMIT: a broken peer

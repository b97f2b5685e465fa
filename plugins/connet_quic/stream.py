"""One bidirectional QUIC stream: our glue on the library's stream events, with
backpressure in both directions.

Receiving: delivered data waits here, unread, and counts against the connection's receive
credit until the application reads it (:meth:`QuicEndpointConnection.consumed`; see
``_aioquic.py`` for how the credit follows it). Sending: ``write_nowait`` queues on the
library and reports whether the stream's unsent bytes are within ``stream_send_buffer``;
``drain`` waits until the connection's send rounds bring them back under it.

The stream talks to its connection only through the connection's stream-glue methods
(``send_stream_data``, ``unsent``, ``consumed``, ...); the connection drives the stream
through ``feed``, ``peer_reset``, ``peer_stopped_sending`` and the wake-ups.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from connet_core.errors import StreamReset, TransportError

if TYPE_CHECKING:
    from connet_quic.connection import QuicEndpointConnection


class QuicEndpointStream:
    """A bidirectional stream (implements :class:`connet_core.transport.Stream`)."""

    def __init__(self, connection: "QuicEndpointConnection", stream_id: int) -> None:
        self._connection = connection
        self._stream_id = stream_id
        # delivered, unread data as the library handed it over: read() joins what it
        # returns in one copy (a bytearray buffer would copy every byte twice)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof_received = False
        self._read_reset_code: int | None = None  # the peer reset its sending side
        self._write_reset_code: int | None = None  # the peer sent STOP_SENDING
        self._reset_locally = False
        self._local_reset_code = 0  # what our own reads/writes raise after reset()
        self._eof_sent = False
        self._read_waiter: asyncio.Future[None] | None = None
        # every drain() waiting for room (end-to-end TLS may flush while the TCP end drains)
        self._write_waiters: list[asyncio.Future[None]] = []
        self._blocked_writers = connection.blocked_writers  # where drain() waits (see there)

    @property
    def stream_id(self) -> int:
        return self._stream_id

    def __repr__(self) -> str:
        return f"<QuicEndpointStream {self._stream_id}>"

    # driven by the connection

    def feed(self, data: bytes, end_stream: bool) -> bool:
        """Data (and maybe the FIN) the peer sent. False if nobody will read it (the stream
        was reset either way): the connection then credits it back at once."""
        if self._reset_locally or self._read_reset_code is not None:
            if end_stream:
                self._eof_received = True
            return False
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end_stream:
            self._eof_received = True
        self.wake_reader()
        return True

    def wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def wake_writer(self) -> None:
        for waiter in self._write_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def peer_reset(self, code: int) -> None:
        """The peer reset its sending side (RESET_STREAM): what is unread is dropped."""
        self._read_reset_code = code
        self._connection.discard_unread(self)
        self.wake_reader()

    def peer_stopped_sending(self, code: int) -> None:
        """The peer sent STOP_SENDING: our writes fail from now on."""
        self._write_reset_code = code
        self.wake_writer()

    def clear_unread(self) -> int:
        """Drop what is delivered and unread; how many bytes that was."""
        n = self._buffered
        self._chunks.clear()
        self._buffered = 0
        return n

    @property
    def finished(self) -> bool:
        """Both directions are over and nothing is left to read: the connection forgets it."""
        read_done = self._eof_received or self._read_reset_code is not None or self._reset_locally
        write_done = self._eof_sent or self._write_reset_code is not None or self._reset_locally
        return read_done and write_done and not self._buffered

    # the Stream API

    async def read(self, max_bytes: int = 65536) -> bytes:
        connection = self._connection
        while not self._buffered:
            if self._read_reset_code is not None:
                raise StreamReset(self._read_reset_code)
            if self._reset_locally:
                raise StreamReset(self._local_reset_code)
            if self._eof_received:
                connection.forget_if_done(self)
                return b""
            connection.raise_if_closed()
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if self._read_reset_code is not None:
            raise StreamReset(self._read_reset_code)
        connection.raise_if_closed()
        data = self._take(max_bytes)
        connection.consumed(self, len(data))
        return data

    def _take(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        if self._buffered <= max_bytes:
            data = chunks.pop() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            return data
        parts = []
        need = max_bytes
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                parts.append(chunks.popleft())
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                chunks[0] = chunk[need:]
                need = 0
        self._buffered -= max_bytes
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        connection = self._connection
        self._check_writable()
        if data:
            connection.send_stream_data(self._stream_id, data, False)
        return connection.unsent(self._stream_id) <= connection.stream_send_buffer

    async def drain(self) -> None:
        connection = self._connection
        bound = connection.stream_send_buffer
        while connection.unsent(self._stream_id) > bound:
            waiter = asyncio.get_running_loop().create_future()
            self._write_waiters.append(waiter)
            self._blocked_writers.add(self)
            try:
                await waiter
            finally:
                self._write_waiters.remove(waiter)
                if not self._write_waiters:
                    self._blocked_writers.discard(self)
            self._check_writable()

    def _check_writable(self) -> None:
        self._connection.raise_if_closed()
        if self._write_reset_code is not None:
            raise StreamReset(self._write_reset_code)
        if self._reset_locally:
            raise StreamReset(self._local_reset_code)
        if self._eof_sent:
            raise TransportError(f"stream {self._stream_id}: write after write_eof")

    async def write_eof(self) -> None:
        # async only to match the seam (a layered stream may have to write first); never waits
        if self._eof_sent or self._reset_locally or self._write_reset_code is not None:
            return
        if self._connection.closed:
            return
        self._eof_sent = True
        self._connection.send_stream_data(self._stream_id, b"", True)
        self._connection.forget_if_done(self)

    def reset(self, code: int) -> None:
        if self._reset_locally:
            return
        # what is still open in each direction, before reset() closes both
        reset_sending = not self._eof_sent and self._write_reset_code is None
        stop_receiving = not self._eof_received and self._read_reset_code is None
        self._reset_locally = True
        self._local_reset_code = code
        self._connection.reset_stream(self, code, reset_sending=reset_sending, stop_receiving=stop_receiving)
        self.wake_reader()
        self.wake_writer()

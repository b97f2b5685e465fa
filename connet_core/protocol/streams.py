"""Messages over a transport :class:`~connet_core.transport.Stream`: thin async glue over
:class:`~connet_core.protocol.framing.FrameDecoder`.

Every failure the peer can cause is a :class:`~connet_core.errors.ProtocolError` whose
``code`` is the close code to reset the stream (or close the connection) with; transport
errors (``StreamReset``, ``ConnectionLost``) pass through unchanged.
"""

from __future__ import annotations

import asyncio

from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.protocol.codec import Message
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import FrameDecoder, frame
from connet_core.protocol.messages import ConnectRefused
from connet_core.transport import Stream

__all__ = ["MessageStream", "Expected", "refuse_connect"]

# What recv accepts: one message class, several, or None for any.
Expected = type | tuple[type, ...] | None


def _names(expected: type | tuple[type, ...]) -> str:
    classes = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(cls.__name__ for cls in classes)


class MessageStream:
    """Sends and receives framed messages on one stream.

    Reads may take bytes past the last frame (they are raw tunneled bytes on a data stream):
    :meth:`take_remaining` hands them back before raw forwarding starts.
    """

    __slots__ = ("_stream", "_decoder", "_finished")

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder()
        self._finished = False  # the peer's FIN has been read

    @property
    def stream(self) -> Stream:
        return self._stream

    @property
    def finished(self) -> bool:
        """True once the peer has finished its side (FIN read)."""
        return self._finished

    async def send(self, msg: Message) -> None:
        """Frame and write ``msg`` (waits on the stream's backpressure)."""
        await self._stream.write(frame(msg))

    async def recv(self, expected: Expected = None, timeout: float | None = None, *, limits: Expected = None) -> Message:
        """The next message, which must be an instance of ``expected`` (any if None).

        ``limits``: decode as cheaply as for these types without checking the message's type
        (for a caller that judges the type itself, like the identity proof's machines); the
        default is ``expected``. Raises ProtocolError: PROTOCOL_ERROR if the stream ends
        before a full message, the frame is malformed or the message is not ``expected``;
        TIMEOUT if none arrives within ``timeout`` seconds."""
        msg = await self.recv_or_finished(expected, timeout, limits=limits)
        if msg is None:
            raise ProtocolError("stream ended before a message")
        return msg

    async def recv_or_finished(
        self, expected: Expected = None, timeout: float | None = None, *, limits: Expected = None
    ) -> Message | None:
        """Like :meth:`recv`, but None when the peer finished the stream cleanly (FIN at a
        frame boundary): the normal end of a session stream."""
        try:
            async with asyncio.timeout(timeout):
                msg = await self._next_message(limits if limits is not None else expected)
        except TimeoutError:
            what = _names(expected) if expected is not None else "a message"
            raise ProtocolError(f"timed out after {timeout}s waiting for {what}", CloseCode.TIMEOUT) from None
        if msg is not None and expected is not None and not isinstance(msg, expected):
            raise ProtocolError(f"expected {_names(expected)}, got {type(msg).__name__}")
        return msg

    def take_remaining(self) -> bytes:
        """The bytes read past the last received message; the caller forwards them first."""
        return self._decoder.take_remaining()

    async def _next_message(self, expected: Expected) -> Message | None:
        while True:
            msg = self._decoder.next_message(expected)  # decoding limits sized for what is expected
            if msg is not None:
                return msg
            if self._finished:
                if self._decoder.buffered:
                    raise ProtocolError(f"stream ended mid-frame ({self._decoder.buffered} bytes buffered)")
                return None
            # Never more than the decoder has room for: that bounds what a peer can make us hold.
            data = await self._stream.read(self._decoder.room)
            if not data:
                self._finished = True
            else:
                self._decoder.feed(data)


async def refuse_connect(messages: MessageStream, stream: Stream, code: int, reason: str) -> None:
    """Answer a ``Connect`` with ``ConnectRefused`` and end the stream; a peer already gone
    needs no answer."""
    try:
        await messages.send(ConnectRefused(code, reason))
        await stream.write_eof()
    except (ConnectionLost, StreamReset):
        pass  # nobody left to tell

"""Framing (sans-I/O): a frame is a 4-byte big-endian payload length, then the payload.

:class:`FrameDecoder` turns bytes, fed in any chunking, back into messages. It never holds
more than one largest frame plus its header, checks a length prefix as soon as it has one
(an oversized frame is refused before its payload is buffered), and hands back the bytes
after the last decoded frame untouched (:meth:`FrameDecoder.take_remaining`): on data
streams raw tunneled bytes follow the Connect/Connected frames.
"""

from __future__ import annotations

from connet_core.errors import ProtocolError
from connet_core.protocol.codec import MAX_FRAME_SIZE, Message, decode, encode
from connet_core.protocol.codes import CloseCode

__all__ = ["HEADER_SIZE", "MAX_FRAME_SIZE", "MAX_BUFFERED", "FrameDecoder", "frame"]

HEADER_SIZE = 4
# The most a FrameDecoder ever holds: one largest frame and its header.
MAX_BUFFERED = HEADER_SIZE + MAX_FRAME_SIZE


def frame(msg: Message) -> bytes:
    """``msg`` encoded and length-prefixed. Raises ProtocolError (CloseCode.INTERNAL_ERROR)
    if it cannot be encoded or its payload exceeds MAX_FRAME_SIZE: the fault is ours."""
    payload = encode(msg)
    if len(payload) > MAX_FRAME_SIZE:
        raise ProtocolError(
            f"{type(msg).__name__} payload of {len(payload)} bytes exceeds {MAX_FRAME_SIZE}",
            CloseCode.INTERNAL_ERROR,
        )
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Reassembles frames from a byte stream.

    Feed at most :attr:`room` bytes at a time (a reader asks for that many); then call
    :meth:`next_message` until it returns None. After a ProtocolError the decoder is broken:
    every later call raises the same error, because the stream is out of sync for good.
    """

    __slots__ = ("_buffer", "_error")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    @property
    def room(self) -> int:
        """How many bytes :meth:`feed` accepts now without exceeding MAX_BUFFERED."""
        return MAX_BUFFERED - len(self._buffer)

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame, undecoded frames, or raw bytes after the last frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Append received bytes. Raises ProtocolError if they exceed :attr:`room`, or if the
        frame at the front announces a payload larger than MAX_FRAME_SIZE."""
        self._raise_if_broken()
        if len(data) > self.room:
            # Refusing, not growing, is what bounds the memory a peer can make us hold.
            self._fail(f"fed {len(data)} bytes with room for {self.room}", CloseCode.INTERNAL_ERROR)
        self._buffer += data
        self._check_front_header()

    def next_message(self, expected: type | tuple[type, ...] | None = None) -> Message | None:
        """The next complete message, or None if more bytes are needed.
        Raises ProtocolError for an oversized or malformed frame.

        ``expected``: the message types the reader will accept, if it knows; the payload is
        then decoded with limits sized for them (codec.limits_for), which is what keeps a
        hostile frame read before authentication cheap to refuse."""
        self._raise_if_broken()
        length = self._check_front_header()
        if length is None or len(self._buffer) < HEADER_SIZE + length:
            return None
        payload = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
        del self._buffer[: HEADER_SIZE + length]
        try:
            return decode(payload, expected)
        except ProtocolError as err:
            self._error = err
            raise

    def take_remaining(self) -> bytes:
        """Every byte buffered after the last decoded frame; the buffer is left empty.
        Used to hand a data stream over to raw forwarding without losing a byte."""
        remaining = bytes(self._buffer)
        self._buffer.clear()
        return remaining

    def _check_front_header(self) -> int | None:
        """The payload length of the frame at the front, once its header is complete."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
        if length > MAX_FRAME_SIZE:
            self._fail(f"frame of {length} bytes exceeds {MAX_FRAME_SIZE}", CloseCode.PROTOCOL_ERROR)
        return length

    def _fail(self, reason: str, code: int) -> None:
        self._error = ProtocolError(reason, code)
        raise self._error

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise ProtocolError(str(self._error), self._error.code)

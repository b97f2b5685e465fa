"""Unit tests of framing hand-over and of MessageStream over a fake in-test stream."""

from __future__ import annotations

import asyncio

import pytest

from connet_core.errors import ProtocolError, StreamReset
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import MAX_BUFFERED, FrameDecoder, frame
from connet_core.protocol.messages import Challenge, Connect, Connected, ConnectRefused, Hello, Proof, Welcome
from connet_core.protocol.streams import MessageStream
from connet_core.transport import Stream


class FakeStream:
    """One end of an in-memory stream pair: writes go to the peer's queue as chunks.

    ``None`` in a queue is FIN; a StreamReset in it is raised by read. ``read`` honours
    ``max_bytes`` and remembers the largest request, so tests can check bounded reads."""

    def __init__(self, incoming: asyncio.Queue[bytes | None | StreamReset], outgoing: asyncio.Queue[bytes | None | StreamReset]) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self._pending = b""
        self._finished = False
        self.largest_read_request = 0

    @property
    def stream_id(self) -> int:
        return 0

    async def read(self, max_bytes: int = 65536) -> bytes:
        self.largest_read_request = max(self.largest_read_request, max_bytes)
        if not self._pending and not self._finished:
            item = await self._incoming.get()
            if isinstance(item, StreamReset):
                raise item
            if item is None:
                self._finished = True
            else:
                self._pending = item
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def write(self, data: bytes) -> None:
        await self._outgoing.put(bytes(data))

    def write_nowait(self, data: bytes) -> bool:
        self._outgoing.put_nowait(bytes(data))
        return True  # the queue is unbounded

    async def drain(self) -> None:
        pass

    async def write_eof(self) -> None:
        self._outgoing.put_nowait(None)

    def reset(self, code: int) -> None:
        self._outgoing.put_nowait(StreamReset(code))


def stream_pair() -> tuple[FakeStream, FakeStream]:
    a_to_b: asyncio.Queue[bytes | None | StreamReset] = asyncio.Queue()
    b_to_a: asyncio.Queue[bytes | None | StreamReset] = asyncio.Queue()
    return FakeStream(b_to_a, a_to_b), FakeStream(a_to_b, b_to_a)


def test_fake_stream_satisfies_the_transport_protocol() -> None:
    a, _ = stream_pair()
    assert isinstance(a, Stream)


# --- FrameDecoder hand-over ---------------------------------------------------------------


def test_take_remaining_returns_raw_bytes_after_connect() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(Connect(name="web")) + b"GET / HTTP/1.1\r\n")
    assert decoder.next_message() == Connect(name="web")
    assert decoder.take_remaining() == b"GET / HTTP/1.1\r\n"
    assert decoder.take_remaining() == b""
    assert decoder.buffered == 0


def test_take_remaining_with_nothing_after_the_frame_is_empty() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(Connected()))
    assert decoder.next_message() == Connected()
    assert decoder.take_remaining() == b""


def test_raw_bytes_that_look_like_a_frame_are_not_decoded_before_asked() -> None:
    decoder = FrameDecoder()
    raw = frame(Welcome())  # tunneled bytes may be anything, even a valid frame
    decoder.feed(frame(Connect(name="web")) + raw)
    assert decoder.next_message() == Connect(name="web")
    assert decoder.take_remaining() == raw


def test_decoder_is_broken_after_a_malformed_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00\x00\x01\xc1" + frame(Welcome()))
    with pytest.raises(ProtocolError):
        decoder.next_message()
    with pytest.raises(ProtocolError):
        decoder.next_message()
    with pytest.raises(ProtocolError):
        decoder.feed(frame(Welcome()))


# --- MessageStream ------------------------------------------------------------------------


async def test_messages_flow_both_ways() -> None:
    a, b = stream_pair()
    dialer, listener = MessageStream(a), MessageStream(b)
    await dialer.send(Hello(certificate=b"cert"))
    assert await listener.recv(Hello) == Hello(certificate=b"cert")
    await listener.send(Challenge(nonce=b"n" * 32))
    assert await dialer.recv(Challenge) == Challenge(nonce=b"n" * 32)
    await dialer.send(Proof(signature=b"sig"))
    assert await listener.recv((Proof, Welcome)) == Proof(signature=b"sig")


async def test_frames_split_across_reads_reassemble() -> None:
    a, b = stream_pair()
    data = frame(Connect(name="web")) + frame(Connected())
    for i in range(len(data)):
        await a.write(data[i : i + 1])
    receiver = MessageStream(b)
    assert await receiver.recv(Connect) == Connect(name="web")
    assert await receiver.recv(Connected) == Connected()


async def test_take_remaining_after_connect_hands_over_raw_bytes() -> None:
    a, b = stream_pair()
    await a.write(frame(Connect(name="web")) + b"early raw bytes")
    await a.write(b" and more")
    destination = MessageStream(b)
    assert await destination.recv(Connect) == Connect(name="web")
    remaining = destination.take_remaining()
    # Whatever the message layer read past the frame comes back; the rest is still unread.
    rest = await b.read(1000) if len(remaining) < len(b"early raw bytes and more") else b""
    assert remaining + rest == b"early raw bytes and more"


async def test_eof_mid_frame_is_a_protocol_error() -> None:
    a, b = stream_pair()
    whole = frame(Connect(name="web"))
    await a.write(whole[:-1])
    await a.write_eof()
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv(Connect)
    assert info.value.code == CloseCode.PROTOCOL_ERROR


async def test_eof_before_any_message_is_a_protocol_error_for_recv() -> None:
    a, b = stream_pair()
    await a.write_eof()
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv()
    assert info.value.code == CloseCode.PROTOCOL_ERROR


async def test_clean_eof_is_none_for_recv_or_finished() -> None:
    a, b = stream_pair()
    await MessageStream(a).send(Welcome())
    await a.write_eof()
    receiver = MessageStream(b)
    assert await receiver.recv_or_finished() == Welcome()
    assert await receiver.recv_or_finished() is None
    assert receiver.finished
    assert await receiver.recv_or_finished() is None  # stays finished, reads nothing more


async def test_timeout_is_a_protocol_error_with_timeout_code() -> None:
    _, b = stream_pair()  # nothing is ever written: the read waits until the timeout
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv(Connected, timeout=0.01)
    assert info.value.code == CloseCode.TIMEOUT


async def test_message_arriving_within_timeout_is_received() -> None:
    a, b = stream_pair()
    await MessageStream(a).send(Connected())
    assert await MessageStream(b).recv(Connected, timeout=5) == Connected()


async def test_unexpected_message_type_is_a_protocol_error() -> None:
    a, b = stream_pair()
    await MessageStream(a).send(ConnectRefused(code=CloseCode.NOT_FOUND))
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv(Connected)
    assert info.value.code == CloseCode.PROTOCOL_ERROR


async def test_unexpected_type_among_several_is_a_protocol_error() -> None:
    a, b = stream_pair()
    await MessageStream(a).send(Welcome())
    with pytest.raises(ProtocolError):
        await MessageStream(b).recv((Connected, ConnectRefused))


async def test_malformed_frame_is_a_protocol_error() -> None:
    a, b = stream_pair()
    await a.write(b"\x00\x00\x00\x02\x81\xc1")
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv()
    assert info.value.code == CloseCode.PROTOCOL_ERROR


async def test_oversized_frame_is_refused_from_its_header() -> None:
    a, b = stream_pair()
    await a.write((1 << 31).to_bytes(4, "big"))  # no payload follows: must not wait for it
    with pytest.raises(ProtocolError) as info:
        await MessageStream(b).recv(timeout=5)
    assert info.value.code == CloseCode.PROTOCOL_ERROR


async def test_reads_never_ask_for_more_than_the_decoder_holds() -> None:
    a, b = stream_pair()
    await a.write(frame(Connect(name="web")) + b"x" * (2 * MAX_BUFFERED))
    assert await MessageStream(b).recv(Connect) == Connect(name="web")
    assert 0 < b.largest_read_request <= MAX_BUFFERED


async def test_stream_reset_passes_through() -> None:
    a, b = stream_pair()
    a.reset(CloseCode.SHUTDOWN)
    with pytest.raises(StreamReset) as info:
        await MessageStream(b).recv()
    assert info.value.code == CloseCode.SHUTDOWN

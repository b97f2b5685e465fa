"""TCP <-> stream pumping for one tunneled connection.

Backpressure both ways: a chunk is read from one side only after the previous one was
accepted by the other (``Stream.write`` waits while the stream's unsent data is above its
bound; ``StreamWriter.drain`` waits on the TCP send buffer). Half-close travels as FIN;
an error on one side aborts the other (stream reset / TCP RST), so nothing is silently cut.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from connet_core.errors import ConnectionLost, StreamReset
from connet_core.protocol.codes import CloseCode
from connet_core.transport import Stream

log = logging.getLogger("connet.forward")

# Bytes moved per read, both ways, by the relay's splice and inside end-to-end TLS. 256 KiB
# was tried (a loopback TCP send of 256 KiB costs about half the CPU per byte of one of
# 64 KiB): no change beyond noise in `tests/bench/before_after.sh b4ff557 --only targets`.
CHUNK = 64 * 1024


@dataclass(slots=True)
class Counters:
    """Bytes moved by one tunnel end, for status and metrics."""

    to_stream: int = 0
    from_stream: int = 0
    active: int = 0
    total: int = 0


@dataclass(slots=True)
class _Outcome:
    reset_code: int | None = None  # the stream was reset: abort TCP
    tcp_error: bool = False  # TCP failed: reset the stream
    errors: list[BaseException] = field(default_factory=list)


async def _tcp_to_stream(reader: asyncio.StreamReader, stream: Stream, counters: Counters, out: _Outcome) -> None:
    try:
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                await stream.write_eof()
                return
            counters.to_stream += len(chunk)
            await stream.write(chunk)
    except (ConnectionError, OSError):
        out.tcp_error = True
        stream.reset(CloseCode.DESTINATION_UNREACHABLE)
    except StreamReset as exc:
        out.reset_code = exc.code
    except ConnectionLost as exc:
        out.reset_code = exc.code


async def _stream_to_tcp(stream: Stream, writer: asyncio.StreamWriter, counters: Counters, out: _Outcome) -> None:
    try:
        while True:
            data = await stream.read(CHUNK)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            counters.from_stream += len(data)
            writer.write(data)
            await writer.drain()
    except StreamReset as exc:
        out.reset_code = exc.code
    except ConnectionLost as exc:
        out.reset_code = exc.code
    except (ConnectionError, OSError):
        out.tcp_error = True
        stream.reset(CloseCode.DESTINATION_UNREACHABLE)


def _abort_tcp(writer: asyncio.StreamWriter) -> None:
    """Close with RST, so the TCP peer sees an error rather than a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            log.debug("could not set SO_LINGER before abort")
    writer.transport.abort()


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: Stream,
    counters: Counters,
    initial: bytes = b"",
) -> None:
    """Move bytes both ways until both directions finished or one failed, then close TCP.

    ``initial`` is stream data already read past the last protocol frame."""
    out = _Outcome()
    counters.active += 1
    counters.total += 1
    try:
        if initial:
            counters.from_stream += len(initial)
            writer.write(initial)
        async with asyncio.TaskGroup() as tg:
            to_stream = tg.create_task(_tcp_to_stream(reader, stream, counters, out))
            from_stream = tg.create_task(_stream_to_tcp(stream, writer, counters, out))
            # a reset on either direction ends both: the other could wait forever
            done, _ = await asyncio.wait({to_stream, from_stream}, return_when=asyncio.FIRST_COMPLETED)
            if out.reset_code is not None or out.tcp_error:
                to_stream.cancel()
                from_stream.cancel()
    finally:
        counters.active -= 1
        if out.reset_code is not None:
            # the local program sees a reset: say why, once per connection
            log.info("tunneled connection cut (%s): resetting its TCP connection", CloseCode.describe(out.reset_code))
            _abort_tcp(writer)
        else:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                log.debug("tcp close after tunnel end failed")


async def _copy(source: Stream, sink: Stream, counter: list[int]) -> None:
    while True:
        data = await source.read(CHUNK)
        if not data:
            await sink.write_eof()
            return
        counter[0] += len(data)
        await sink.write(data)


async def splice(a: Stream, b: Stream, initial_to_b: bytes = b"") -> int:
    """Join two streams (a relay's job): bytes both ways with backpressure, FIN passed on,
    a reset on either side resets the other. Returns the number of bytes moved."""
    moved = [0]
    try:
        if initial_to_b:
            moved[0] += len(initial_to_b)
            await b.write(initial_to_b)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_copy(a, b, moved))
            tg.create_task(_copy(b, a, moved))
    except* (StreamReset, ConnectionLost) as group:
        code = next((getattr(e, "code", CloseCode.INTERNAL_ERROR) for e in group.exceptions), CloseCode.INTERNAL_ERROR)
        a.reset(code)
        b.reset(code)
    return moved[0]

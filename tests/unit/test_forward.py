"""connet_core.forward: one tunneled connection's TCP end pumped into a stream.

The TCP side is a real loopback connection (the pump's point is the socket: pausing reads,
half-close, RST); the stream side is the in-memory transport, whose sent-byte count shows
what the pump queued."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from typing import AsyncIterator

import pytest

from connet_core.errors import ProtocolError, StreamReset
from connet_core.forward import Counters, TcpEnd, accept_tcp, pump
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.testing import MemoryConnection, MemoryNetwork, MemoryStream, make_test_certificate
from connet_core.transport import TransportOptions, Trust

ALPN = "connet-test/1"
BOUND = 64 * 1024  # the stream's unsent bound: small, so the pump has to pause often
LINGER_ZERO = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {1, 0}: close sends RST


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def settle() -> None:
    """Let every ready callback run (no wall-clock wait)."""
    for _ in range(20):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def tunnel_stream() -> AsyncIterator[tuple[MemoryConnection, MemoryStream, MemoryStream]]:
    """A stream over the in-memory transport: the near end (pumped) and the far end."""
    identity, der, _, _ = make_test_certificate("peer.test")
    transport = MemoryNetwork().transport()
    options = TransportOptions(stream_send_buffer=BOUND)
    listener = await transport.bind(HostPort("", 0), identity=identity, alpns=[ALPN], options=options)
    dialer = await transport.bind(HostPort("", 0), identity=None, alpns=[], options=options)
    try:
        conn = await dialer.dial(listener.local_address, alpn=ALPN, trust=Trust(pinned_der=der))
        accepted = await listener.accept()
        near = await conn.open_stream()  # the far end sees it with its first bytes
        yield conn, near, accepted  # type: ignore[misc]
    finally:
        await dialer.close()
        await listener.close()


@contextlib.asynccontextmanager
async def tcp_connection() -> AsyncIterator[tuple[TcpEnd, socket.socket]]:
    """A loopback TCP connection as a source accepts it: our TcpEnd and the program's socket."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    program = socket.socket()
    program.setblocking(False)
    try:
        connecting = loop.sock_connect(program, listener.getsockname())
        accepted, _ = (await asyncio.gather(loop.sock_accept(listener), connecting))[0]
        end = await accept_tcp(accepted)
        try:
            yield end, program
        finally:
            end.transport.abort()
    finally:
        program.close()
        listener.close()


async def recv_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        out += chunk
    return bytes(out)


async def read_stream(stream: MemoryStream) -> bytes:
    out = bytearray()
    while chunk := await stream.read(1 << 20):
        out += chunk
    return bytes(out)


async def test_both_directions_arrive_intact_and_half_close_travels() -> None:
    loop = asyncio.get_running_loop()
    up, down = os.urandom(4 << 20), os.urandom(4 << 20)
    counters = Counters()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):

        async def the_program() -> bytes:
            await loop.sock_sendall(program, up)
            program.shutdown(socket.SHUT_WR)  # its FIN must reach the far end as the stream's
            return await recv_all(program)

        async def the_far_end() -> bytes:
            far = await accepted.accept_stream()
            async with asyncio.TaskGroup() as tg:
                received = tg.create_task(read_stream(far))
                await far.write(down)
                await far.write_eof()
            return received.result()

        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(pump(end, near, counters, initial=b"first"))
            program_got = tg.create_task(the_program())
            far_got = tg.create_task(the_far_end())
    assert digest(far_got.result()) == digest(up)
    assert digest(program_got.result()) == digest(b"first" + down)
    assert (counters.to_stream, counters.from_stream) == (len(up), len(b"first") + len(down))
    assert (counters.active, counters.total) == (0, 1)


async def test_bytes_sent_before_the_tunnel_was_ready_wait_and_arrive_in_order() -> None:
    """A destination's service may talk first: its bytes must not overtake what the
    tunnel writes before pumping (the Connected answer)."""
    loop = asyncio.get_running_loop()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        await loop.sock_sendall(program, b"early bytes")
        async with asyncio.timeout(5):
            while conn.stats().bytes_sent == 0 and not end._held:
                await asyncio.sleep(0)  # until the end holds them (real socket I/O)
        assert conn.stats().bytes_sent == 0, "nothing may reach the stream before pump"
        await near.write(b"CONNECTED|")
        program.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            pumping = tg.create_task(pump(end, near, Counters()))
            far = await accepted.accept_stream()
            assert await read_stream(far) == b"CONNECTED|early bytes"
            await far.write_eof()
        assert pumping.done()


async def test_tcp_reading_pauses_while_nobody_reads_the_stream() -> None:
    loop = asyncio.get_running_loop()
    payload = os.urandom(48 << 20)  # far more than loopback TCP buffers hold
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(pump(end, near, Counters()))
            flooding = tg.create_task(loop.sock_sendall(program, payload))
            while end.transport.is_reading() or conn.stats().bytes_sent <= BOUND:
                await asyncio.sleep(0)
            await settle()
            queued = conn.stats().bytes_sent
            # one read of TCP past the bound at most (asyncio reads up to 256 KiB at a time)
            assert queued <= BOUND + 256 * 1024, f"{queued} bytes queued into a stream nobody reads"
            assert not flooding.done(), "the program's sends must be held back by TCP"
            far = await accepted.accept_stream()
            received = tg.create_task(read_stream(far))
            await flooding
            program.shutdown(socket.SHUT_WR)
            await received
            await far.write_eof()
    assert digest(received.result()) == digest(payload)


async def test_a_stream_reset_resets_the_tcp_connection() -> None:
    loop = asyncio.get_running_loop()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            tg.create_task(pump(end, near, Counters()))
            await loop.sock_sendall(program, b"hello")
            far = await accepted.accept_stream()
            assert await far.read() == b"hello"
            far.reset(CloseCode.PROTOCOL_ERROR)
            with pytest.raises(ConnectionResetError):
                await recv_all(program)  # RST, not a clean end


async def test_a_tcp_reset_resets_the_stream() -> None:
    loop = asyncio.get_running_loop()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            pumping = tg.create_task(pump(end, near, Counters()))
            await loop.sock_sendall(program, b"hello")
            far = await accepted.accept_stream()
            assert await far.read() == b"hello"
            program.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            program.close()
            with pytest.raises(StreamReset) as reset:
                await read_stream(far)
            # said as a reset, not as an unreachable destination (issue 18)
            assert reset.value.code == CloseCode.TCP_RESET
        assert pumping.done()


async def test_a_program_gone_before_the_tunnel_was_ready_resets_the_stream() -> None:
    """The destination's first bytes (a server that speaks first) must not crash the pump
    when the program behind the source already reset its connection."""
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        program.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        program.close()
        async with asyncio.timeout(5):
            while not end._lost:
                await asyncio.sleep(0)  # until the end saw the RST (real socket I/O)
        await near.write(b"CONNECTED|")
        async with asyncio.timeout(10):
            await pump(end, near, Counters(), initial=b"SSH-2.0-banner")
        far = await accepted.accept_stream()
        with pytest.raises(StreamReset) as reset:
            await read_stream(far)
        assert reset.value.code == CloseCode.TCP_RESET


class FailingTLS:
    """A stream whose reads fail as end-to-end TLS does on a bad record or a cut stream."""

    def __init__(self, inner: MemoryStream) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def read(self, max_bytes: int = 65536) -> bytes:
        raise ProtocolError("end-to-end TLS failed: bad record mac")


async def test_an_end_to_end_tls_failure_resets_both_sides() -> None:
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        await near.write(b"CONNECTED|")
        async with asyncio.timeout(10):
            await pump(end, FailingTLS(near), Counters())  # type: ignore[arg-type]
            with pytest.raises(ConnectionResetError):
                await recv_all(program)  # RST: the program must not take a cut stream for a clean end
        far = await accepted.accept_stream()
        with pytest.raises(StreamReset) as reset:
            await read_stream(far)
        assert reset.value.code == CloseCode.PROTOCOL_ERROR

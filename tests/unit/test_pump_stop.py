"""connet_core.forward.pump when the process stops: a tunnel cut in the middle is reset at
both ends (RST to the program, a stream reset to the far end), never closed as if complete;
one that had finished stays finished. Real loopback TCP, the in-memory transport's stream."""

from __future__ import annotations

import asyncio
import socket

import pytest

from connet_core.errors import StreamReset
from connet_core.forward import Counters, pump
from connet_core.protocol.codes import CloseCode
from unit.test_forward import read_stream, recv_all, tcp_connection, tunnel_stream


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_a_pump_cancelled_mid_transfer_resets_both_ends(direction: str) -> None:
    loop = asyncio.get_running_loop()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        pumping = asyncio.create_task(pump(end, near, Counters()))
        await loop.sock_sendall(program, b"request")
        far = await accepted.accept_stream()
        assert await far.read() == b"request"
        if direction == "download":
            await far.write(b"x" * 100_000)  # the far end is sending: the program is mid-read
            assert await loop.sock_recv(program, 1) == b"x"
        else:
            await loop.sock_sendall(program, b"y" * 100_000)  # the program is mid-upload
            assert await far.read(1) == b"y"
        pumping.cancel()  # the process stops
        with pytest.raises(asyncio.CancelledError):
            await pumping
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(recv_all(program), 5)  # RST, not a clean end
        with pytest.raises(StreamReset) as reset:
            await asyncio.wait_for(read_stream(far), 5)
        assert reset.value.code == CloseCode.SHUTDOWN


async def test_a_finished_tunnel_closes_cleanly() -> None:
    """The other half of the rule: only what a stop cuts is reset. (Linux delivers the data
    and the FIN before a later RST, so this guards the clean path; it cannot tell a late
    reset apart: tests/e2e/test_shutdown.py checks the processes.)"""
    loop = asyncio.get_running_loop()
    async with tunnel_stream() as (conn, near, accepted), tcp_connection() as (end, program):
        pumping = asyncio.create_task(pump(end, near, Counters()))
        await loop.sock_sendall(program, b"request")
        program.shutdown(socket.SHUT_WR)
        far = await accepted.accept_stream()
        assert await read_stream(far) == b"request"
        await far.write(b"answer")
        await far.write_eof()
        await asyncio.wait_for(pumping, 5)  # both FINs through: the tunnel is done
        assert await asyncio.wait_for(recv_all(program), 5) == b"answer"

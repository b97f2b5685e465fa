"""The endpoint's batched UDP socket (plugins/connet_quic/_udp.py) on real loopback sockets:
GSO runs arrive as the datagrams they were made of, GRO buffers are split back, a kernel
that refuses GSO and a full send buffer lose nothing."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import Any

import pytest

from connet_quic._udp import GSO_MAX_SEGMENTS, BatchedUdpSocket, segments

LINUX = sys.platform.startswith("linux")


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Received:
    """What a BatchedUdpSocket delivered, and a way to wait for an amount of it."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.batches = 0
        self._changed = asyncio.Event()

    def deliver(self, buffer: bytes, segment: int, addr: Any) -> None:
        self.datagrams += segments(buffer, segment)

    def batch_done(self) -> None:
        self.batches += 1
        self._changed.set()

    async def wait_for(self, count: int) -> list[bytes]:
        async with asyncio.timeout(5):
            while len(self.datagrams) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.datagrams


def payloads(sizes: list[int]) -> list[bytes]:
    return [os.urandom(size) for size in sizes]


async def recv_plain(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        return [await loop.sock_recv(sock, 65536) for _ in range(count)]


@pytest.mark.parametrize(
    "sizes",
    [
        [1200] * 10 + [500],  # equal sizes and a shorter last one: one GSO send, cut by the kernel
        # a larger datagram after a smaller one starts a new run; so does the segment limit
        [300, 1200, 1200, 100, 1200] + [50] * (GSO_MAX_SEGMENTS + 3),
    ],
    ids=["one-run", "cut-runs"],
)
async def test_runs_arrive_as_their_datagrams_at_a_plain_socket(sizes: list[int]) -> None:
    loop = asyncio.get_running_loop()
    plain = udp_socket()
    sender = BatchedUdpSocket(loop, udp_socket(), deliver=lambda b, s, a: None, batch_done=lambda: None)
    try:
        if LINUX:
            assert sender.gso
        sent = payloads(sizes)
        sender.send(sent, plain.getsockname())
        assert await recv_plain(plain, len(sent)) == sent
    finally:
        await sender.close(flush=True)
        plain.close()


async def test_gro_buffers_are_split_back_into_datagrams() -> None:
    loop = asyncio.get_running_loop()
    received = Received()
    receiver_sock = udp_socket()
    receiver = BatchedUdpSocket(loop, receiver_sock, deliver=received.deliver, batch_done=received.batch_done)
    sender = BatchedUdpSocket(loop, udp_socket(), deliver=lambda b, s, a: None, batch_done=lambda: None)
    try:
        if LINUX:
            assert receiver.gro
        sent = payloads([1200] * 40 + [7]) + payloads([900] * 5)
        sender.send(sent, receiver_sock.getsockname())
        assert await received.wait_for(len(sent)) == sent
        # GRO (or the read batch) handed over more than one datagram per wake-up
        assert received.batches < len(sent)
    finally:
        await sender.close(flush=True)
        await receiver.close(flush=False)


class RefusingGso:
    """A socket whose kernel refuses UDP_SEGMENT (as EIO on a route without checksum offload)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.refused = 0

    def sendmsg(self, *args: Any) -> int:
        self.refused += 1
        raise OSError(errno.EIO, "Input/output error")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def test_a_kernel_refusing_gso_turns_it_off_and_loses_nothing() -> None:
    loop = asyncio.get_running_loop()
    plain = udp_socket()
    refusing = RefusingGso(udp_socket())
    sender = BatchedUdpSocket(loop, refusing, deliver=lambda b, s, a: None, batch_done=lambda: None)  # type: ignore[arg-type]
    try:
        sender.gso = True
        sent = payloads([1200] * 4 + [10])
        sender.send(sent, plain.getsockname())
        assert refusing.refused == 1 and not sender.gso
        sender.send(sent, plain.getsockname())  # one datagram at a time now
        assert refusing.refused == 1
        assert await recv_plain(plain, 2 * len(sent)) == sent + sent
    finally:
        await sender.close(flush=True)
        plain.close()


class FullOnce:
    """A socket whose send buffer is full for the first ``full`` sends."""

    def __init__(self, sock: socket.socket, full: int) -> None:
        self._sock = sock
        self.full = full

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.full:
            self.full -= 1
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self._sock.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def test_a_full_send_buffer_queues_in_order_and_close_flushes() -> None:
    loop = asyncio.get_running_loop()
    plain = udp_socket()
    full = FullOnce(udp_socket(), full=1)
    sender = BatchedUdpSocket(loop, full, deliver=lambda b, s, a: None, batch_done=lambda: None)  # type: ignore[arg-type]
    sender.gso = False
    try:
        sent = payloads([100, 200, 300])
        sender.send(sent, plain.getsockname())
        # the first send met a full buffer: everything after it waits behind it, in order
        assert sender.queued_bytes == 600
    finally:
        await sender.close(flush=True)  # the writable socket drains the queue first
    try:
        assert sender.queued_bytes == 0
        assert await recv_plain(plain, 3) == sent
    finally:
        plain.close()


@pytest.mark.parametrize("flush", [True, False])
async def test_close_stops_reading_and_closes_the_socket(flush: bool) -> None:
    loop = asyncio.get_running_loop()
    sock = udp_socket()
    received = Received()
    udp = BatchedUdpSocket(loop, sock, deliver=received.deliver, batch_done=received.batch_done)
    await udp.close(flush=flush)
    assert sock.fileno() == -1
    udp.send([b"after close"], ("127.0.0.1", 9))  # ignored, no error

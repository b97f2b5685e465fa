"""Plain TCP services to put behind a destination: HTTP, echo, a slow checksum sink."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import threading
import time
import urllib.request
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Awaitable, Callable, Iterator


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # the test output is for the tunnel's logs


@contextmanager
def http_server(directory: str) -> Iterator[int]:
    """A real HTTP server for ``directory`` on 127.0.0.1; yields its port."""
    handler = lambda *a, **kw: _QuietHandler(*a, directory=directory, **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def _serve(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[int]:
    """Serves ``handle`` on 127.0.0.1 at an ephemeral port; yields the port. The listen
    backlog is a real server's (the kernel caps it at net.core.somaxconn), not asyncio's
    default of 100: a burst of 1000 tunneled connections arrives at the service at once,
    while this loop is busy with the test's own 1000 clients, and SYNs dropped from a full
    accept queue come back only after the kernel's 1 s and 3 s retransmissions."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """Echoes every byte back and half-closes when the client does; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass  # the test decides what a reset means
        finally:
            writer.close()

    async with _serve(handle) as port:
        yield port


@asynccontextmanager
async def slow_sink(bytes_per_second: int) -> AsyncIterator[int]:
    """Reads no faster than ``bytes_per_second`` (a slow program behind the tunnel), and
    answers the SHA-256 (hex) of everything it read once the client half-closed."""
    step = 0.01  # read a 10 ms share of the rate, then wait out the rest of the 10 ms

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while data := await reader.read(max(1, int(bytes_per_second * step))):
                digest.update(data)
                due += len(data) / bytes_per_second
                await asyncio.sleep(max(0.0, due - loop.time()))  # the pace is the point here
            writer.write(digest.hexdigest().encode())
            await writer.drain()
        except ConnectionError:
            pass  # the test sees the cut from its side
        finally:
            writer.close()

    async with _serve(handle) as port:
        yield port


async def _send_and_half_close(writer: asyncio.StreamWriter, payload: bytes, chunk: int) -> None:
    view = memoryview(payload)
    for offset in range(0, len(view), chunk):
        writer.write(view[offset : offset + chunk])
        await writer.drain()
    writer.write_eof()


async def upload_for_digest(port: int, payload: bytes, chunk: int = 65536) -> str:
    """Send ``payload`` through 127.0.0.1:``port``, half-close, return the sink's answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _send_and_half_close(writer, payload, chunk)
        return (await reader.read()).decode()
    finally:
        writer.close()


async def exchange(port: int, payload: bytes, chunk: int = 65536) -> bytes:
    """Send ``payload`` through 127.0.0.1:``port`` while reading; half-close; return what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def receive() -> bytes:
        parts = []
        while data := await reader.read(1 << 20):
            parts.append(data)
        return b"".join(parts)

    try:
        _, received = await asyncio.gather(_send_and_half_close(writer, payload, chunk), receive())
    finally:
        writer.close()
    return received


async def exchange_through(port: int, payload: bytes, attempts: int = 20) -> bytes:
    """One exchange through the tunnel, retried: right after both ends' dials succeed, the
    source may pick the duplicate connection being closed (the stream fails, nothing hangs)."""
    for attempt in range(attempts):
        try:
            received = await exchange(port, payload)
        except (ConnectionError, OSError):
            received = b""
        if received == payload or attempt == attempts - 1:
            return received
        await asyncio.sleep(0.1)  # retry pacing after a failed attempt, not a wait for an event
    raise AssertionError("unreachable")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def wait_tunnel(port: int, timeout: float = 15.0, answer: bytes | None = None) -> None:
    """Until one small exchange goes through: an echo destination answers the probe itself,
    another one ``answer``."""
    deadline = time.monotonic() + timeout
    probe = b"probe"
    while True:
        try:
            if await exchange(port, probe) == (probe if answer is None else answer):
                return
        except (ConnectionError, OSError):
            pass  # refused while no path is up yet: try again
        if time.monotonic() > deadline:
            raise AssertionError(f"no tunnel through 127.0.0.1:{port} within {timeout}s")
        await asyncio.sleep(0.2)


def fetch_with_retry(url: str, timeout: float = 15.0) -> str:
    """The first connections may race the peers' handshake; the tunnel refuses, never hangs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode()
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise

"""Processes, services and probes for tests/bench/run.py.

``python bench_support.py forward TARGET_PORT`` runs the one-hop asyncio TCP forwarder
ceiling as its own process (it prints ``listening PORT``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

from support.cluster import start_destination, start_server, start_source  # noqa: E402
from support.daemons import CONNET, Daemon, Daemons  # noqa: E402

from connet_core.forward import CHUNK  # noqa: E402  what connet moves per read; every sender here uses it too

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


# --- TCP services ---------------------------------------------------------------------------


@dataclass
class Service:
    port: int


# The load generator and the sink are blocking sockets in threads, moving 1 MiB per system
# call: they should cost the shared 2 cores as little as possible, so that what is measured
# is the tunnel (an asyncio load generator and sink took about a core at 200 MB/s).
LOAD_CHUNK = 1 << 20
UPLOAD_TIMEOUT = 300  # seconds a blocked send or receive may take: a stalled tunnel ends the thread
_threads = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="bench-io")


@contextlib.asynccontextmanager
async def sink_server() -> AsyncIterator[Service]:
    """Counts what a client sends until it half-closes, answers the count (8 bytes)."""

    def drain(conn: socket.socket) -> None:
        buffer = bytearray(LOAD_CHUNK)
        count = 0
        with conn:
            try:
                while n := conn.recv_into(buffer):
                    count += n
                conn.sendall(struct.pack("!Q", count))
            except OSError:
                return  # the client gave up; its own read reports that

    def accept(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the sink is done
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    listener = socket.create_server(("127.0.0.1", 0))
    acceptor = threading.Thread(target=accept, args=(listener,), daemon=True)
    acceptor.start()
    try:
        yield Service(listener.getsockname()[1])
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)


PAYLOAD = os.urandom(LOAD_CHUNK)


def _upload_blocking(port: int, total: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=UPLOAD_TIMEOUT) as conn:
        view = memoryview(PAYLOAD)
        left = total
        while left > 0:
            n = min(left, LOAD_CHUNK)
            conn.sendall(view[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 8:
            more = conn.recv(8 - len(reply))
            if not more:
                raise ConnectionError(f"the sink answered {len(reply)} of 8 bytes")
            reply += more
        return struct.unpack("!Q", reply)[0]


async def upload(port: int, total: int) -> int:
    """Send ``total`` bytes to a sink through 127.0.0.1:``port``; return what it counted."""
    return await asyncio.get_running_loop().run_in_executor(_threads, _upload_blocking, port, total)


async def echo_latency(port: int, requests: int) -> tuple[float, float]:
    """p50 and p99 seconds of a 100-byte round trip on one kept-open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = b"x" * 100
    samples = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            writer.write(message)
            await reader.readexactly(len(message))
            samples.append(time.perf_counter() - started)
    finally:
        writer.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def new_connections_per_second(port: int, count: int, concurrency: int = 20) -> float:
    """Connections that each open, echo 10 bytes and close, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"0123456789")
                await reader.readexactly(10)
            finally:
                writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def hold_connections(port: int, count: int) -> AsyncIterator[int]:
    """``count`` tunneled connections, each proven open by one echo, held while inside."""
    opened: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            writer.write(b"ping")
            await reader.readexactly(4)

    try:
        await asyncio.gather(*(one() for _ in range(count)))
        yield len(opened)
    finally:
        for writer in opened:
            writer.close()


# --- connet processes ----------------------------------------------------------------------


class Cluster:
    """``connet server`` (control + relay), a destination and a source, on one transport."""

    def __init__(self, *, transport: str, route: str, target_port: int) -> None:
        self.transport = transport
        self.route = route
        self.target_port = target_port
        self._tmp = tempfile.TemporaryDirectory(prefix="connet-bench-")
        self.daemons = Daemons(Path(self._tmp.name))
        self.source: Daemon
        self.destination: Daemon
        self.server: Daemon
        self.source_port = 0

    def __enter__(self) -> "Cluster":
        work = self.daemons.workdir
        certs = work / "certs"
        subprocess.run([*CONNET, "cert", "--out", str(certs), "--host", "localhost", "--host", "127.0.0.1"],
                       check=True, capture_output=True)
        # the daemons read the transport from the environment (CONNET_TRANSPORT). They log
        # at debug level, as support.cluster starts them: a line per tunneled connection
        os.environ["CONNET_TRANSPORT"] = self.transport
        try:
            info = start_server(self.daemons, certs)
            self.server = info.daemon
            self.destination = start_destination(self.daemons, info, self.target_port, route=self.route)
            self.source, self.source_port = start_source(self.daemons, info, route=self.route)
        except BaseException:
            self.close()
            raise
        finally:
            os.environ.pop("CONNET_TRANSPORT", None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.daemons.close()
        self._tmp.cleanup()

    def transport_in_use(self) -> str:
        """What the daemons run (``auto`` resolved), from the source's start-up line."""
        return self.source.wait_for(r"client, transport (\S+)").group(1)

    def path_processes(self) -> dict[str, subprocess.Popen]:
        procs = {"source": self.source.proc, "destination": self.destination.proc}
        if self.route == "relay":
            procs["relay"] = self.server.proc
        return procs

    async def ready(self, timeout: float = 20.0) -> float:
        """Until one byte went through the tunnel and back; returns when (perf_counter)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.source_port)
                try:
                    writer.write(b"x")
                    writer.write_eof()
                    reply = await asyncio.wait_for(reader.read(8), 5)
                finally:
                    writer.close()
                if reply:  # echo answers b"x", a sink answers its count
                    return time.perf_counter()
            except (ConnectionError, OSError, TimeoutError):
                pass  # refused while no path is up yet
            if time.monotonic() > deadline:
                raise AssertionError(f"no {self.route} tunnel within {timeout}s:\n{self.daemons.dump()[-4000:]}")
            await asyncio.sleep(0.02)


# --- the asyncio forwarder ceiling ------------------------------------------------------------


def start_forwarder(target_port: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "forward", str(target_port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"forwarder did not start: {line!r}")
    return proc, int(line.split()[1])


async def _forward_main(target_port: int) -> None:
    """The simplest honest forwarder: read 64 KiB, write, drain; both directions."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            writer.transport.abort()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "forward":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_forward_main(int(sys.argv[2])))
    else:
        sys.exit(__doc__)

"""A soak of uploads through real tunnels: every upload's SHA-256 checked, stalls counted.

One configuration is a transport, a route (direct or relay) and a tunnel kind:
``long-lived`` sends every upload through one source client's peer connection, ``fresh``
restarts the source client after every ``parallel`` uploads, so each batch goes through a
new QUIC connection (its handshake, slow start and stream limits again). Uploads go
``parallel`` at a time to a sink that answers the SHA-256 of what it read once the upload
half-closed. A **stall** is an upload that made no progress (no chunk accepted, no answer)
for ``stall_after`` seconds; it is given up, counted, and the soak goes on. Used by
``tests/bench/soak.py`` (thousands of uploads) and by the short version in the e2e suite.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

from support.cluster import ServerInfo, start_destination, start_server, start_source
from support.daemons import Daemon, Daemons
from support.services import _serve, wait_tunnel

CHUNK = 256 * 1024
PAYLOADS = 4  # distinct payloads, reused round-robin: the digests are computed once


@dataclass
class SoakResult:
    transport: str
    route: str
    tunnel: str
    uploads: int = 0
    ok: int = 0
    stalls: int = 0
    corrupted: int = 0
    failed: int = 0  # cut (reset, refused): reported to the program, not silent
    slowest: float = 0.0
    moved: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def mbps(self) -> float:
        return self.moved / self.seconds / 1e6 if self.seconds else 0.0


@asynccontextmanager
async def digest_sink() -> AsyncIterator[int]:
    """Reads everything, answers the SHA-256 (hex) once the client half-closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        try:
            while data := await reader.read(1 << 20):
                digest.update(data)
            writer.write(digest.hexdigest().encode())
            await writer.drain()
        except ConnectionError:
            pass  # the uploader sees the cut from its side and counts it
        finally:
            writer.close()

    async with _serve(handle) as port:
        yield port


async def upload_once(port: int, payload: bytes, stall_after: float) -> str:
    """Upload ``payload``, half-close, return the sink's answer. TimeoutError when one step
    (connect, one chunk accepted, the answer) made no progress for ``stall_after`` s."""
    async with asyncio.timeout(stall_after):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        view = memoryview(payload)
        for offset in range(0, len(view), CHUNK):
            writer.write(view[offset:offset + CHUNK])
            async with asyncio.timeout(stall_after):
                await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(stall_after):
            return (await reader.read()).decode()
    finally:
        writer.close()


class _Tunnel:
    """A server, a destination in front of the sink, and a source that can be replaced."""

    def __init__(self, workdir: Path, certs: Path, route: str, sink_port: int, transport: str) -> None:
        self.daemons = Daemons(workdir)
        self.env = {"CONNET_TRANSPORT": transport}
        self.route = route
        self.server = self._server(certs)
        self.destination = self._client(lambda: start_destination(self.daemons, self.server, sink_port, route=route))
        self.source: Daemon | None = None
        self.source_port = 0
        self.restarts = 0

    def _server(self, certs: Path) -> ServerInfo:
        os.environ.update(self.env)  # support.cluster starts daemons with this process's environment
        try:
            return start_server(self.daemons, certs)
        finally:
            for key in self.env:
                os.environ.pop(key, None)

    def _client(self, start):  # type: ignore[no-untyped-def]
        os.environ.update(self.env)
        try:
            return start()
        finally:
            for key in self.env:
                os.environ.pop(key, None)

    async def new_source(self) -> None:
        if self.source is not None:
            self.source.stop()
            self.restarts += 1
        self.source, self.source_port = self._client(
            lambda: start_source(self.daemons, self.server, route=self.route, name=f"src{self.restarts}"))
        await wait_tunnel(self.source_port, timeout=30.0, answer=hashlib.sha256(b"probe").hexdigest().encode())

    def close(self) -> None:
        self.daemons.close()


async def soak(workdir: Path, certs: Path, *, transport: str, route: str, tunnel: str, uploads: int,
               size: int, parallel: int = 8, stall_after: float = 30.0) -> SoakResult:
    """Run one configuration; never raises for a bad upload (it is counted instead)."""
    payloads = [os.urandom(size) for _ in range(PAYLOADS)]
    digests = [hashlib.sha256(p).hexdigest() for p in payloads]
    result = SoakResult(transport, route, tunnel)
    async with digest_sink() as sink_port:
        workdir.mkdir(parents=True, exist_ok=True)
        tun = _Tunnel(workdir, certs, route, sink_port, transport)
        try:
            await tun.new_source()
            started = time.monotonic()

            async def one(index: int) -> None:
                payload, expected = payloads[index % PAYLOADS], digests[index % PAYLOADS]
                began = time.monotonic()
                try:
                    answer = await upload_once(tun.source_port, payload, stall_after)
                except TimeoutError:
                    result.stalls += 1
                    result.errors.append(f"upload {index}: no progress for {stall_after}s")
                    return
                except OSError as exc:
                    result.failed += 1
                    result.errors.append(f"upload {index}: {exc!r}")
                    return
                if answer != expected:
                    result.corrupted += 1
                    result.errors.append(f"upload {index}: sha256 {answer[:16]!r}, expected {expected[:16]}")
                    return
                result.ok += 1
                result.moved += size
                result.slowest = max(result.slowest, time.monotonic() - began)

            if tunnel == "fresh":
                for first in range(0, uploads, parallel):
                    if first:
                        await tun.new_source()  # a new client: a new peer connection for this batch
                    async with asyncio.TaskGroup() as tg:
                        for index in range(first, min(uploads, first + parallel)):
                            tg.create_task(one(index))
            else:
                queue = iter(range(uploads))

                async def worker() -> None:
                    for index in queue:  # the workers share one iterator: each index once
                        await one(index)

                async with asyncio.TaskGroup() as tg:
                    for _ in range(parallel):
                        tg.create_task(worker())
            result.uploads = uploads
            result.seconds = time.monotonic() - started
        finally:
            if result.errors:
                (workdir / "daemons.log").write_text(tun.daemons.dump())
            tun.close()
    return result


def table(results: list[SoakResult], size: int) -> str:
    head = (f"{'transport':<9} {'route':<6} {'tunnel':<10} {'uploads':>7} {'stalls':>6} {'corrupted':>9} "
            f"{'failed':>6} {'slowest s':>9} {'MB/s':>7}   ({size // (1 << 20)} MiB each)")
    rows = [f"{r.transport:<9} {r.route:<6} {r.tunnel:<10} {r.uploads:>7} {r.stalls:>6} {r.corrupted:>9} "
            f"{r.failed:>6} {r.slowest:>9.2f} {r.mbps:>7.1f}" for r in results]
    return "\n".join([head, *rows])

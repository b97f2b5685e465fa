"""Traffic helper run *inside* a lab namespace (``ip netns exec NS python netprobe.py ...``).

It is a separate process because a network namespace belongs to a thread/process: the test
process stays in the root namespace and drives traffic from inside the host namespaces this way.
Standard library only, so it runs under any Python.

    echo  --port P               echo server on 127.0.0.1:P; prints "listening echo tcp ADDR"
    send  --port P --bytes N     one connection: send N random bytes, half-close, read the echo;
                                 prints one JSON line {ok, sent, received, sha_ok, elapsed, error}
    probe --port P --deadline S  small exchanges until one echoes intact or S seconds pass;
                                 prints one JSON line {ok, attempts, elapsed, error}
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time

CHUNK = 65536


async def _echo(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except ConnectionError:
            pass  # the sender judges the outcome by the echo's checksum
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    addr = server.sockets[0].getsockname()
    print(f"listening echo tcp {addr[0]}:{addr[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _exchange(port: int, payload: bytes, timeout: float, progress: dict | None = None) -> bytes:
    """Send ``payload`` while reading the echo; ``progress`` counts bytes sent/received so a
    failure can say how far it got."""
    progress = {} if progress is None else progress
    progress.update(sent_bytes=0, received_bytes=0)
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)

    async def send() -> None:
        view = memoryview(payload)
        for offset in range(0, len(view), CHUNK):
            writer.write(view[offset : offset + CHUNK])
            await writer.drain()
            progress["sent_bytes"] = offset + len(view[offset : offset + CHUNK])
        writer.write_eof()

    async def receive() -> bytes:
        parts = []
        while data := await reader.read(1 << 20):
            parts.append(data)
            progress["received_bytes"] += len(data)
        return b"".join(parts)

    try:
        _, received = await asyncio.wait_for(asyncio.gather(send(), receive()), timeout)
    finally:
        writer.close()
    return received


async def _send(port: int, nbytes: int, timeout: float) -> dict:
    payload = os.urandom(nbytes)
    started = time.monotonic()
    result: dict = {"ok": False, "sent": nbytes, "received": 0, "sha_ok": False, "error": None}
    progress: dict = {}
    try:
        received = await _exchange(port, payload, timeout, progress)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        # "received" stays 0 (nothing intact); how far it got goes with the error
        result["error"] = f"{type(exc).__name__}: {exc} after {progress}"
    else:
        result["received"] = len(received)
        result["sha_ok"] = hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        result["ok"] = result["sha_ok"]
        if not result["ok"]:
            result["error"] = f"echo differs: {len(received)} of {nbytes} bytes"
    result["elapsed"] = time.monotonic() - started
    return result


async def _probe(port: int, deadline: float, interval: float) -> dict:
    started = time.monotonic()
    attempts = 0
    error = None
    while True:
        attempts += 1
        result = await _send(port, 1024, timeout=max(1.0, deadline - (time.monotonic() - started)))
        if result["ok"]:
            return {"ok": True, "attempts": attempts, "elapsed": time.monotonic() - started, "error": None}
        error = result["error"]
        if time.monotonic() - started + interval > deadline:
            return {"ok": False, "attempts": attempts, "elapsed": time.monotonic() - started, "error": error}
        # a refused connection is immediate: pace the retries (polling, not waiting for an event)
        await asyncio.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("--port", type=int, required=True)
    send = sub.add_parser("send")
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--bytes", type=int, required=True)
    send.add_argument("--timeout", type=float, default=120.0)
    probe = sub.add_parser("probe")
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--deadline", type=float, default=15.0)
    probe.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    if args.command == "echo":
        try:
            asyncio.run(_echo(args.port))
        except KeyboardInterrupt:
            pass  # stopped by the lab
        return 0
    if args.command == "send":
        result = asyncio.run(_send(args.port, args.bytes, args.timeout))
    else:
        result = asyncio.run(_probe(args.port, args.deadline, args.interval))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

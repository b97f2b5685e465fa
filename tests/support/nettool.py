"""A tiny TCP tool to run inside a network namespace (``ip netns exec NS python nettool.py``).

    nettool.py echo                 echo server on 127.0.0.1:0; prints "listening echo tcp ADDR"
    nettool.py send PORT NBYTES     send random bytes through 127.0.0.1:PORT, expect them echoed;
                                    prints "ok <seconds>" or "fail <reason>", exit 0/1
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support.services import echo_server, exchange  # noqa: E402


async def serve_echo() -> None:
    async with echo_server() as port:
        print(f"listening echo tcp 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


async def send(port: int, size: int, timeout: float) -> int:
    payload = os.urandom(size)
    started = time.monotonic()
    try:
        received = await asyncio.wait_for(exchange(port, payload), timeout)
    except (OSError, TimeoutError) as exc:
        print(f"fail {type(exc).__name__}", flush=True)
        return 1
    if received != payload:
        print(f"fail corrupt ({len(received)} of {size} bytes)", flush=True)
        return 1
    print(f"ok {time.monotonic() - started:.3f}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["echo"]:
        asyncio.run(serve_echo())
        return 0
    if argv[:1] == ["send"] and len(argv) >= 3:
        timeout = float(argv[3]) if len(argv) > 3 else 10.0
        return asyncio.run(send(int(argv[1]), int(argv[2]), timeout))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

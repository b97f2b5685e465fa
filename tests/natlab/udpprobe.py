"""UDP traffic helper run *inside* a lab namespace, like netprobe.py (standard library only).

    echo --port P                       UDP echo on 127.0.0.1:P; prints "listening echo udp ADDR"
    send --port P --count N --size S    N datagrams of S random bytes to 127.0.0.1:P, one at a
                                        time, each resent until its echo comes back whole
                                        (SHA-256) or --deadline passes; prints one JSON line
                                        {ok, echoed, resent, bytes, elapsed, error}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time


def echo(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print(f"listening echo udp 127.0.0.1:{port}", flush=True)
    while True:
        data, addr = sock.recvfrom(65536)
        sock.sendto(data, addr)


def send(port: int, count: int, size: int, deadline: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    started = time.monotonic()
    echoed = resent = 0
    for _ in range(count):
        payload = os.urandom(size)
        digest = hashlib.sha256(payload).digest()
        while True:
            if time.monotonic() - started > deadline:
                return {"ok": False, "echoed": echoed, "resent": resent, "bytes": echoed * size,
                        "elapsed": time.monotonic() - started, "error": "deadline"}
            sock.sendto(payload, ("127.0.0.1", port))
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                resent += 1
                continue
            if hashlib.sha256(data).digest() == digest:
                echoed += 1
                break
    return {"ok": True, "echoed": echoed, "resent": resent, "bytes": echoed * size,
            "elapsed": time.monotonic() - started, "error": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["echo", "send"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    if args.command == "echo":
        echo(args.port)
    else:
        print(json.dumps(send(args.port, args.count, args.size, args.deadline)), flush=True)
        sys.exit(0)


if __name__ == "__main__":
    main()

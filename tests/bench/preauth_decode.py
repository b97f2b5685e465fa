"""What a hostile first message costs to decode, before and after pre-authentication limits.

    python tests/bench/preauth_decode.py [--repeat 50]

Builds 64 KiB Authenticate frames padded in the ways that make msgpack build the most
objects (an array of empty arrays, a map of empty-array fields, a tree of small arrays) and
times ``codec.decode`` on each with the general limits (``expected=None``: how every frame
was decoded before) and with the limits sized for Authenticate (``expected=Authenticate``:
what the control server uses for a session's first message). Prints a table of the median
time per decode in milliseconds. Both refuse the frame except the general decode of the
padded-but-valid ones, which returns an Authenticate (unknown fields are ignored).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgpack  # noqa: E402

from connet_core.errors import ProtocolError  # noqa: E402
from connet_core.protocol.codec import MAX_FRAME_SIZE, decode  # noqa: E402
from connet_core.protocol.messages import Authenticate  # noqa: E402


def _fill(make, start: int) -> bytes:
    """The largest payload ``make(n)`` that fits one frame."""
    n = start
    payload = make(n)
    while len(payload) > MAX_FRAME_SIZE:
        n = int(n * MAX_FRAME_SIZE / len(payload)) - 1
        payload = make(n)
    return payload


def _tree(depth: int, fanout: int) -> list:
    return [] if depth == 0 else [_tree(depth - 1, fanout) for _ in range(fanout)]


def hostile_payloads() -> dict[str, bytes]:
    base = {"t": "auth", "token": "x" * 32}
    return {
        "array of empty arrays": _fill(lambda n: msgpack.packb({**base, "pad": [[]] * n}), 70_000),
        "map of empty-array fields": _fill(
            lambda n: msgpack.packb({**base, **{f"k{i}": [] for i in range(n)}}), 10_000),
        "tree of 8-item arrays": _fill(lambda n: msgpack.packb({**base, "pad": [_tree(4, 8)] * n}), 16),
        "plain (no padding)": msgpack.packb(base),
    }


def time_decode(payload: bytes, expected, repeat: int) -> tuple[float, str]:
    samples = []
    outcome = ""
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            decode(payload, expected)
            outcome = "decoded"
        except ProtocolError:
            outcome = "refused"
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(f"{'payload':28} {'bytes':>6}  {'general limits':>22}  {'Authenticate limits':>22}")
    for name, payload in hostile_payloads().items():
        before, before_outcome = time_decode(payload, None, args.repeat)
        after, after_outcome = time_decode(payload, Authenticate, args.repeat)
        print(f"{name:28} {len(payload):6}  {before:9.3f} ms {before_outcome:>9}  {after:9.3f} ms {after_outcome:>9}")


if __name__ == "__main__":
    main()

"""What running plain-function decision hooks off the event loop costs per authentication.

    python tests/bench/hook_thread_hop.py [--rounds 2000] [--concurrent 50]

One authentication is what the control server asks for every new connection: the address
(``admit_address``), the token (``authenticate``) and the principal (``authorize``), through
the ``Hooks`` facade with the default plugins (tokens, cidr: plain functions). Timed two ways:
``inline``, each plain function called on the event loop (how they ran before), and
``worker thread``, each handed to a hook worker thread and awaited (how they run now).
Prints microseconds of wall time and of process CPU per authentication, one at a time and
with ``--concurrent`` authentications in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from connet_core import plugins  # noqa: E402
from connet_core.model import Principal, PrincipalKind  # noqa: E402

TOKENS = tuple(f"token-{i:04d}-{'x' * 24}" for i in range(100))
# connet server's [server] keys of the tokens and cidr plugins
SETTINGS = {"tokens": {"tokens": TOKENS}, "cidr": {"ip-restriction": {"allow-cidrs": (ipaddress.ip_network("127.0.0.0/8"),)}}}
ADDRESS = ipaddress.ip_address("127.0.0.1")


class Inline:
    """Stands in for the worker threads: calls the function on the loop, as before."""

    async def run(self, function: Callable[..., Any], *args: object) -> Any:
        return function(*args)


async def authenticate_once(hooks: plugins.Hooks, token: str) -> None:
    kind = PrincipalKind.CLIENT
    assert await hooks.admit_address_async(kind, ADDRESS) is None
    principal = await hooks.authenticate_async(kind, token)
    assert isinstance(principal, Principal)
    assert await hooks.authorize_async(principal, ADDRESS) is None


async def measure(hooks: plugins.Hooks, rounds: int, concurrent: int) -> tuple[float, float]:
    """Microseconds of wall time and CPU per authentication."""
    for token in TOKENS[:20]:  # warm up: worker threads started, caches filled
        await authenticate_once(hooks, token)
    wall, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < rounds:
        batch = min(concurrent, rounds - done)
        await asyncio.gather(*(authenticate_once(hooks, TOKENS[(done + i) % len(TOKENS)]) for i in range(batch)))
        done += batch
    return ((time.perf_counter() - wall) / rounds * 1e6, (time.process_time() - cpu) / rounds * 1e6)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for label, inline in (("inline (before)", True), ("worker thread (now)", False)):
        for concurrent in (1, args.concurrent):
            hooks = plugins.load_hooks(plugin_settings=SETTINGS)
            if inline:
                hooks._threads = Inline()  # type: ignore[assignment]
            wall, cpu = await measure(hooks, args.rounds, concurrent)
            rows.append((label, concurrent, wall, cpu))
    print(f"{'hooks run':<22} {'in flight':>9} {'wall us/auth':>13} {'cpu us/auth':>12}")
    for label, concurrent, wall, cpu in rows:
        print(f"{label:<22} {concurrent:>9} {wall:>13.1f} {cpu:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())

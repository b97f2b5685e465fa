"""The one wait primitive of the memory transport.

Every wait (a read, an accept, a write under backpressure, a dial across a cut) awaits
the ``_Signal`` of its connection, endpoint or network and then re-checks its condition,
so the transport needs no tasks of its own: whatever changes that state fires the signal.
"""

from __future__ import annotations

import asyncio


class _Signal:
    """Wakes every current waiter on each ``fire``; waiters re-check their condition.

    ``fire`` is synchronous, so sync methods (close, reset) can wake waiters too."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    async def wait(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)

    def fire(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)

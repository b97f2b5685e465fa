"""What the engines share: binding the transport, the outbox, backoff."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine, Generic, Hashable, TypeVar

from connet_core.supervise import contained

if TYPE_CHECKING:
    from connet_core.store import Store

T = TypeVar("T")


class Outbox(Generic[T]):
    """Latest-wins mailbox: one pending message per key, so a slow reader never makes the
    sender buffer without bound (every message here carries full state)."""

    def __init__(self) -> None:
        self._pending: dict[Hashable, T] = {}
        self._ready = asyncio.Event()

    def put(self, key: Hashable, message: T) -> None:
        self._pending[key] = message
        self._ready.set()

    async def take(self) -> list[T]:
        await self._ready.wait()
        self._ready.clear()
        items = list(self._pending.values())
        self._pending.clear()
        return items


# a server that was down is tried again at least this often: "working again within 10 s"
# after it returns needs the retry interval plus a dial well under that
RECONNECT_CEILING = 4.0


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, first: float = 0.5, ceiling: float = 10.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.ceiling)
        return delay * random.uniform(0.8, 1.2)


def default_store_dir(component: str) -> Path:
    """Without store-dir, a new temp directory per run, removed when the process exits:
    nothing in it outlives the run anyway (a new identity and secrets next time)."""
    path = Path(tempfile.mkdtemp(prefix=f"connet-{component}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def spawn(
    tg: asyncio.TaskGroup, coro: Coroutine[Any, Any, Any], what: str | None = None, logger: logging.Logger | None = None,
) -> asyncio.Task | None:
    """Start ``coro`` in ``tg`` — unless the group is already shutting down (the component
    is stopping), in which case nothing new starts (TaskGroup says so with RuntimeError) and
    ``coro`` is closed unstarted. With ``what``, the task is the work of one connection or
    stream: contained by the supervision rule (a failure ends that task, with one line)."""
    task = coro if what is None else contained(coro, what, logger or logging.getLogger("connet"))
    try:
        return tg.create_task(task)
    except RuntimeError:
        task.close()
        coro.close()
        return None


async def persistent_secret(store: "Store", name: str, size: int = 32) -> bytes:
    """A random secret kept in the store: the same after a restart with the same store-dir."""
    secret = await store.get("secrets", name)
    if secret is None or len(secret) != size:
        secret = os.urandom(size)
        await store.put("secrets", name, secret)
    return secret

"""Worker threads for plugin hooks written as plain functions, so that one which blocks (a
synchronous LDAP bind, ``time.sleep``, a slow disk) holds a worker, never the event loop.

Why not ``asyncio.to_thread``: the loop's default executor is shared with name resolution
and file reads (a blocked plugin would starve them), and its workers are joined when the
interpreter exits, so a hook stuck for a minute would hold a stopping daemon for that minute.
These workers are daemon threads, a fixed number of them: a plugin that blocks every call
fills them, and further calls wait in the queue until their time limit refuses them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable

# Enough for a few slow decisions at once on a small server; a plugin that blocks forever
# ties them all up, after which its calls (and only hook calls) time out.
WORKERS = 8


class HookThreads:
    """``await threads.run(function, *args)`` runs ``function`` in a worker thread. If the
    awaiting task is cancelled (its time limit) before a worker picks the call up, the call
    is dropped, not run late."""

    def __init__(self, workers: int = WORKERS, name: str = "connet-hook") -> None:
        self._max = workers
        self._name = name
        self._calls: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any],
                                             tuple[object, ...]]] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    async def run(self, function: Callable[..., Any], *args: object) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._start_worker_if_needed()
        self._calls.put((loop, future, function, args))
        return await future

    def _start_worker_if_needed(self) -> None:
        with self._lock:
            if self._idle > 0 or len(self._workers) >= self._max:
                return
            worker = threading.Thread(target=self._work, name=f"{self._name}-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            self._idle += 1
        worker.start()

    def _work(self) -> None:
        while True:
            loop, future, function, args = self._calls.get()
            with self._lock:
                self._idle -= 1
            try:
                if not future.cancelled():  # a call whose time ran out while queued is not run
                    try:
                        result = function(*args)
                    except BaseException as exc:  # handed to the awaiting task, which decides
                        _settle(loop, future, None, exc)
                    else:
                        _settle(loop, future, result, None)
            finally:
                with self._lock:
                    self._idle += 1


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
            exc: BaseException | None) -> None:
    def settle() -> None:
        if future.cancelled():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass

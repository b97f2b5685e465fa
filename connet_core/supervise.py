"""One rule for the long-lived loops of the engines: what a failure means.

A client keeps its control session, its relay links, its direct dialers and its accept
loops running for as long as it runs; a relay keeps its registration. Each of those loops
runs one *attempt* at a time (a session, a connection, an accept) and then decides:

- **retry** (with backoff, one log line, no traceback): what the network or a peer can
  cause. Connections lost, streams reset, dials that failed (``TransportError``), a peer
  that sent something wrong or answered too late (``ProtocolError``, which is also what a
  step's timeout raises), a refusal (``AuthError``) and operating-system errors
  (``OSError``, ``TimeoutError`` among them: a socket error, too many open files).
- **end the component**: everything else. A configuration, plugin or store error, and a
  programming error (``AttributeError``, ``AssertionError``...) propagate with their
  traceback: retrying would only hide them.
- **cancellation always wins**, also when it arrives in disguise. On Python 3.11 a
  TaskGroup whose parent is being cancelled while a child fails raises the child's error
  (in an ExceptionGroup) instead of the CancelledError, and ``asyncio.wait_for`` returns a
  result that arrived together with the cancellation. A loop that caught the error and
  went round again would never stop (a client ignored SIGTERM for minutes that way). So
  after any caught failure, and before waiting to retry, the task's pending cancellation
  (``Task.cancelling()``) is raised again as CancelledError.

The task of one connection or stream (``contained``) follows the same rule without the
retry: a retryable failure ends that task only.

Use::

    while True:
        with attempt() as tried:
            await run_one_session()
        if tried.error is not None:
            log.warning("session failed: %s; retrying", describe(tried.error))
        await pause(backoff.next_delay())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import dataclass
from typing import Awaitable, Iterator, TypeVar

from connet_core.errors import AuthError, ProtocolError, TransportError
from connet_core.protocol.codes import CloseCode

# What a retry can fix: the network, a peer, the operating system. Everything else ends
# the component (ConfigError, PluginError, StoreError, and bugs).
RETRYABLE: tuple[type[BaseException], ...] = (TransportError, ProtocolError, AuthError, OSError)

T = TypeVar("T")


class TaskGroup(asyncio.TaskGroup):
    """asyncio's TaskGroup, with Python 3.12's fix on 3.11 (use it for every group).

    On 3.11, a child that fails after the group's body has finished makes the group cancel
    its parent task, and that cancellation is never taken back (``uncancel`` runs before the
    group waits for its children). The parent then carries a stale cancellation: the rule's
    checkpoint would take it for a stop and end a loop nobody stopped, and ``asyncio.timeout``
    would raise CancelledError instead of TimeoutError. 3.12 takes it back after the wait."""

    if sys.version_info < (3, 12):

        async def __aexit__(self, et, exc, tb):  # type: ignore[no-untyped-def]
            requested_before = self._parent_cancel_requested  # type: ignore[attr-defined]
            try:
                return await super().__aexit__(et, exc, tb)
            finally:
                if self._parent_cancel_requested and not requested_before:  # type: ignore[attr-defined]
                    self._parent_task.uncancel()  # type: ignore[attr-defined]


def checkpoint() -> None:
    """Raise CancelledError if the current task has a cancellation pending: one that an
    ``except`` (or a TaskGroup, or wait_for) took for something else must not be lost."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop: nothing to cancel
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups flattened (``exc`` itself if none)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def retryable(exc: BaseException) -> BaseException | None:
    """The failure to report and retry after: ``exc``, or a group's first leaf when every
    leaf is retryable. None if anything in it must end the component (or is a
    cancellation, which always propagates)."""
    found = leaves(exc)
    if all(isinstance(leaf, RETRYABLE) for leaf in found):
        return found[0]
    return None


def close_code(exc: BaseException) -> int:
    """The close code that tells the peer why an attempt ended with ``exc``: the code a
    protocol or auth error carries, SHUTDOWN when the process is stopping."""
    for leaf in leaves(exc):
        if isinstance(leaf, asyncio.CancelledError):
            return CloseCode.SHUTDOWN
        if isinstance(leaf, (ProtocolError, AuthError)):
            return leaf.code
    return CloseCode.INTERNAL_ERROR


def describe(exc: BaseException) -> str:
    """One line for a log: the error's own message, or its class when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@dataclass(slots=True)
class Attempt:
    """What one attempt ended with: ``error`` is the retryable failure, None if it returned."""

    error: BaseException | None = None


@contextlib.contextmanager
def attempt() -> Iterator[Attempt]:
    """Run one attempt of a supervised loop: a retryable failure is kept in the result
    (and swallowed), anything else propagates, and a pending cancellation is raised even
    when the attempt ended with an error or a result instead."""
    tried = Attempt()
    try:
        yield tried
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        checkpoint()  # a cancellation turned into the children's errors: it wins
        if any(isinstance(leaf, asyncio.CancelledError) for leaf in leaves(exc)):
            raise asyncio.CancelledError() from exc
        cause = retryable(exc)
        if cause is None:
            raise
        tried.error = cause
    checkpoint()  # an attempt that returned although its task was cancelled (wait_for)


async def pause(delay: float) -> None:
    """Wait ``delay`` seconds before the next attempt; a pending cancellation first."""
    checkpoint()
    await asyncio.sleep(delay)


async def contained(work: Awaitable[T], what: str, logger: logging.Logger) -> T | None:
    """Run the task of one connection or stream beside the loops: a retryable failure
    that escaped it ends that task with one line (None), never the component around it.
    Anything else propagates, as does cancellation."""
    with attempt() as tried:
        return await work
    logger.warning("%s: %s", what, describe(tried.error))
    return None

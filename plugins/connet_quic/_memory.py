"""Giving memory back to the system after a flood of failed handshakes.

Each handshake the library starts allocates ~90 KiB (aioquic: CRYPTO buffers of 4-16 KiB
each, TLS and recovery state, all in reference cycles) that the garbage collector frees
later. glibc keeps freed heap memory in the process when a live allocation sits above it,
so after a few hundred handshakes of a flood the RSS stays ~10 MiB higher for good (measured:
docs/security.md row 42). Once a flood is over, :func:`release_freed_memory` collects the
cycles and asks glibc to return its free pages (``malloc_trim``), at most once per
``MIN_INTERVAL`` for the whole process (:func:`release_freed_memory_soon`). Elsewhere than
glibc it only collects.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import sys
import time

logger = logging.getLogger("connet.quic")

MIN_INTERVAL = 10.0  # seconds between two releases, whichever endpoint asks
# failed handshakes since the last release that make one worth its cost (a full collection
# takes milliseconds to tens of milliseconds)
AFTER_FAILED_HANDSHAKES = 200

_last = float("-inf")
_scheduled: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
_malloc_trim = None
if sys.platform.startswith("linux"):
    try:
        _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _malloc_trim = None


def release_freed_memory_soon(loop: asyncio.AbstractEventLoop) -> None:
    """Collect garbage and return free heap pages to the system: now, or at the end of
    MIN_INTERVAL after the last time (so the release after a flood's last handshake is
    never skipped). One pending call per process; a closed loop's is forgotten."""
    global _scheduled
    if _scheduled is not None:
        pending_loop, handle = _scheduled
        if pending_loop is loop and not loop.is_closed() and not handle.cancelled():
            return
    delay = max(0.0, _last + MIN_INTERVAL - time.monotonic())
    _scheduled = (loop, loop.call_later(delay, _release))


def _release() -> None:
    global _last, _scheduled
    _scheduled = None
    _last = time.monotonic()
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    logger.debug("released freed memory after failed handshakes")

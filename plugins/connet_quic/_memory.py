"""Giving memory back to the system after a flood of failed handshakes.

Each handshake the library starts allocates ~90 KiB (aioquic: CRYPTO buffers of 4-16 KiB
each, TLS and recovery state, all in reference cycles) that the garbage collector frees
later. glibc keeps freed heap memory in the process when a live allocation sits above it,
so after a few hundred handshakes of a flood the RSS stays ~10 MiB higher for good (measured:
docs/security.md row 42). Once a flood is over, :func:`release_freed_memory` collects the
cycles and asks glibc to return its free pages (``malloc_trim``), at most once per
``MIN_INTERVAL`` for the whole process. Elsewhere than glibc it only collects.
"""

from __future__ import annotations

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
_malloc_trim = None
if sys.platform.startswith("linux"):
    try:
        _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        _malloc_trim = None


def release_freed_memory() -> bool:
    """Collect garbage and return free heap pages to the system; False if one was done
    less than MIN_INTERVAL ago."""
    global _last
    now = time.monotonic()
    if now - _last < MIN_INTERVAL:
        return False
    _last = now
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    logger.debug("released freed memory after failed handshakes")
    return True

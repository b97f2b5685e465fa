"""Reading the files a configuration names, safely: the one place connet opens them.

A path in a configuration is trusted to name a file, not to *be* a small regular file: it may
be swapped for a FIFO (``open()`` would wait for a writer forever), a device such as
``/dev/zero`` (a read never ends) or a directory. :func:`read_file` therefore

- opens with ``O_NONBLOCK`` (opening a FIFO returns at once instead of waiting for a writer;
  on a regular file the flag changes nothing),
- checks with ``fstat`` on the opened descriptor (no race with a rename) that it is a regular
  file, and refuses anything else naming what it is,
- reads at most the limit of the file's kind plus one byte, so a file larger than its limit
  (or one growing while read) is refused without holding more than the limit.

Limits per kind (:data:`LIMITS`), far above any real file of that kind:

========  ==========  =================================================================
kind      limit       what
========  ==========  =================================================================
config    1 MiB       a TOML configuration file (``--config``)
token     64 KiB      ``token-file``: one token (at most 60 KiB, see config_limits.py)
tokens    4 MiB       ``tokens-file`` and friends: tens of thousands of tokens
pem       1 MiB       ``cert-file``, ``key-file``, ``server-cas``, ``control-cas``: a whole
                      system CA bundle is about 200 KiB
========  ==========  =================================================================

Errors are :class:`FileRefused` (a :class:`~connet_core.errors.ConfigError`): its text is
``PATH: reason``, and callers prefix the key and where it was set.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from connet_core.errors import ConfigError

__all__ = ["LIMITS", "FileRefused", "read_file", "read_text"]

KIB = 1024
MIB = 1024 * KIB

LIMITS: dict[str, int] = {
    "config": 1 * MIB,
    "token": 64 * KIB,
    "tokens": 4 * MIB,
    "pem": 1 * MIB,
}

# a read size that keeps the number of syscalls small without a large transient buffer
_CHUNK = 256 * KIB


class FileRefused(ConfigError):
    """A file cannot be used: missing, unreadable, not a regular file, too large or not text.

    ``path`` is the file, ``reason`` what is wrong with it; ``str()`` is ``PATH: reason``.
    ``errno`` is set when the system refused an open or read (a condition that may pass, such
    as EMFILE); None when the file itself is unusable (its type, size or encoding)."""

    def __init__(self, path: Path | str, reason: str, errno: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.errno = errno


def _describe_mode(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size_text(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"


def read_file(path: Path | str, kind: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``LIMITS[kind]`` of them.

    Never blocks on a FIFO or a device (they are refused without a read) and never reads
    more than the limit plus one byte. Raises :class:`FileRefused` naming the file and what
    is wrong; nothing else (``OSError`` is turned into it)."""
    limit = LIMITS[kind]
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            # a Unix socket (or a FIFO on some systems) cannot be opened: say which it is
            try:
                what = _describe_mode(os.stat(path).st_mode)
            except OSError:
                what = "not a regular file"
            raise FileRefused(path, f"is {what}, not a regular file") from None
        raise FileRefused(path, f"cannot read it ({exc.strerror or exc})", exc.errno) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(path, f"is {_describe_mode(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileRefused(path, f"is larger than {_size_text(limit)} ({st.st_size} bytes)")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:  # the size may change after fstat: the count decides
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileRefused(path, f"is larger than {_size_text(limit)}")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(path, f"cannot read it ({exc.strerror or exc})", exc.errno) from None
    finally:
        os.close(fd)


def read_text(path: Path | str, kind: str) -> str:
    """:func:`read_file` decoded as UTF-8; raises :class:`FileRefused` if it is not UTF-8."""
    data = read_file(path, kind)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused(path, "is not UTF-8 text") from None

"""Default plugin ``filestore``: the store as files, ``store-dir/COMPONENT/NAMESPACE/KEY``.

Writes are atomic: a temporary file in the key's directory is written and fsynced, renamed
over the key (``os.replace``), then the directory is fsynced so the rename itself survives a
crash. Names are ``[A-Za-z0-9_.-]+`` without ``..`` and not starting with ``.`` (a leading
dot is reserved for the temporary files, which ``keys`` never lists).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
from pathlib import Path

from connet_core import hookimpl
from connet_core.errors import StoreError

__all__ = ["FileStore", "check_name", "connet_open_store", "open_file_store"]

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_DIR_MODE = 0o700
_FILE_MODE = 0o600  # the store holds secrets (reset key, relay key, reconnect secrets)


def check_name(what: str, name: str) -> str:
    """``name`` if it is a valid namespace/key/component name, else StoreError."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None or ".." in name:
        raise StoreError(f"invalid store {what} {name!r}: use letters, digits, '_', '-', '.' (no '..', no leading '.')")
    return name


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (mode 0700, parents too) if missing; StoreError if it is unusable."""
    try:
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    except FileExistsError:
        raise StoreError(f"store directory {path} is not a directory") from None
    except OSError as exc:
        raise StoreError(f"store directory {path} cannot be created: {_describe(exc)}") from None
    try:
        st = path.stat()
    except OSError as exc:
        raise StoreError(f"store directory {path} cannot be read: {_describe(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"store directory {path} is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise StoreError(f"store directory {path}: permission denied (need read, write and search)")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    """A :class:`connet_core.store.Store` over a directory.

    File I/O runs in a worker thread (``asyncio.to_thread``): an fsync can take tens of
    milliseconds on a busy disk, and stalling the event loop that long would stall every
    connection's keepalive. The store is used rarely (start-up, new secrets), so the
    thread hop costs nothing that matters.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _key_path(self, namespace: str, key: str) -> Path:
        return self.root / check_name("namespace", namespace) / check_name("key", key)

    async def get(self, namespace: str, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, self._key_path(namespace, key))

    async def put(self, namespace: str, key: str, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise StoreError(f"store value for {namespace}/{key} must be bytes, not {type(value).__name__}")
        await asyncio.to_thread(self._put, self._key_path(namespace, key), bytes(value))

    async def delete(self, namespace: str, key: str) -> None:
        await asyncio.to_thread(self._delete, self._key_path(namespace, key))

    async def keys(self, namespace: str) -> list[str]:
        return await asyncio.to_thread(self._keys, self.root / check_name("namespace", namespace))

    # --- blocking parts, run in a worker thread -----------------------------------------

    @staticmethod
    def _get(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise StoreError(f"store entry {path.parent} is not a directory") from None
        except OSError as exc:
            raise StoreError(f"store entry {path} cannot be read: {_describe(exc)}") from None

    @staticmethod
    def _put(path: Path, value: bytes) -> None:
        directory = path.parent
        created = not directory.exists()
        _ensure_dir(directory)
        if created:
            try:
                _fsync_dir(directory.parent)  # make the new namespace directory itself durable
            except OSError as exc:
                raise StoreError(f"store directory {directory.parent} cannot be synced: {_describe(exc)}") from None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise StoreError(f"store entry {path} cannot be written: {_describe(exc)}") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), _FILE_MODE)
                out.write(value)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            _fsync_dir(directory)
        except OSError as exc:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass  # already renamed or never fully created: nothing to clean up
            except OSError as cleanup:
                exc.add_note(f"and the temporary file {tmp} could not be removed: {_describe(cleanup)}")
            raise StoreError(f"store entry {path} cannot be written: {_describe(exc)}") from exc

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise StoreError(f"store entry {path.parent} is not a directory") from None
        except OSError as exc:
            raise StoreError(f"store entry {path} cannot be deleted: {_describe(exc)}") from None
        try:
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StoreError(f"store directory {path.parent} cannot be synced: {_describe(exc)}") from None

    @staticmethod
    def _keys(directory: Path) -> list[str]:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StoreError(f"store entry {directory} is not a directory") from None
        except OSError as exc:
            raise StoreError(f"store directory {directory} cannot be listed: {_describe(exc)}") from None
        return sorted(n for n in names if _NAME.fullmatch(n) and ".." not in n and (directory / n).is_file())


def open_file_store(component: str, store_dir: Path) -> FileStore:
    """Create ``store_dir`` (mode 0700) and ``store_dir/component`` if missing and check
    both are usable directories; StoreError naming the path otherwise."""
    check_name("component", component)
    store_dir = Path(store_dir)
    _ensure_dir(store_dir)
    root = store_dir / component
    _ensure_dir(root)
    return FileStore(root)


@hookimpl(trylast=True)
def connet_open_store(component: str, store_dir: Path) -> FileStore:
    # the hook is synchronous: creating two directories at start-up is the only I/O here
    return open_file_store(component, store_dir)

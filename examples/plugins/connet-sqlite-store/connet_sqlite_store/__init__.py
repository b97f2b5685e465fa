"""connet plugin ``sqlite-store``: the state of connet's components (the relay's certificate,
control's grant and reset secrets: what makes an identity survive a restart) in one SQLite
file, ``[plugins.sqlite-store] path = "FILE"``. Several components, in one process or in
several, may share the file: each row is keyed by component, namespace and key.

Uses only connet's public plugin API: ``connet_core.hookimpl``, the ``Store`` protocol of
``connet_core.store``, ``connet_core.errors.StoreError`` and ``connet_core.plugin_settings``.
SQLite calls block, so each runs in a worker thread (``asyncio.to_thread``): the event loop
never waits on the disk. Writes are transactions: after a crash a key holds the old or the
new value, never a mix.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from connet_core import hookimpl
from connet_core.errors import StoreError
from connet_core.plugin_settings import PluginKey

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SCHEMA = ("CREATE TABLE IF NOT EXISTS state (component TEXT NOT NULL, namespace TEXT NOT NULL, "
           "key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (component, namespace, key))")
BUSY_TIMEOUT = 10.0  # seconds another process may hold the write lock before a write fails


def _check(what: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(f"bad {what} name {name!r}")
    return name


class SqliteStore:
    """The :class:`connet_core.store.Store` of one component in a shared SQLite file."""

    def __init__(self, path: Path, component: str) -> None:
        self.path = path
        self.component = _check("component", component)
        self._run(self._create)  # at open: a file that is not a database fails now, clearly

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # readers and one writer across processes
        return conn

    def _run(self, work, *args):  # type: ignore[no-untyped-def]
        try:
            conn = self._connect()
            try:
                return work(conn, *args)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite-store {self.path}: {exc}") from None

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute(_SCHEMA)

    async def get(self, namespace: str, key: str) -> bytes | None:
        args = (self.component, _check("namespace", namespace), _check("key", key))
        row = await asyncio.to_thread(self._run, lambda c: c.execute(
            "SELECT value FROM state WHERE component=? AND namespace=? AND key=?", args).fetchone())
        return None if row is None else bytes(row[0])

    async def put(self, namespace: str, key: str, value: bytes) -> None:
        args = (self.component, _check("namespace", namespace), _check("key", key), bytes(value))

        def write(c: sqlite3.Connection) -> None:
            with c:  # one transaction
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", args)

        await asyncio.to_thread(self._run, write)

    async def delete(self, namespace: str, key: str) -> None:
        args = (self.component, _check("namespace", namespace), _check("key", key))
        await asyncio.to_thread(self._run, lambda c: c.execute(
            "DELETE FROM state WHERE component=? AND namespace=? AND key=?", args))

    async def keys(self, namespace: str) -> list[str]:
        args = (self.component, _check("namespace", namespace))
        rows = await asyncio.to_thread(self._run, lambda c: c.execute(
            "SELECT key FROM state WHERE component=? AND namespace=? ORDER BY key", args).fetchall())
        return [row[0] for row in rows]


@hookimpl
def connet_plugin_keys():
    return [PluginKey("path", "path", None, "the SQLite file holding the components' state (created if absent)")]


@hookimpl
def connet_open_store(component, plugin_settings):
    path = plugin_settings.get("path")
    if path is None:
        return None  # not configured: connet's file store (store-dir) serves
    return SqliteStore(Path(path), component)

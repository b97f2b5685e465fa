"""connet-sqlite-store, installed and found through its entry point: the Store contract, an
identity that survives a restart, two components in one file, and a bad file refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from connet_core.errors import StoreError
from connet_core.store import Store
from sqlite_store_support import Daemon, connet

try:
    from connet_sqlite_store import SqliteStore
except ImportError:  # not installed: conftest.py skips every test here, saying why
    SqliteStore = None  # type: ignore[assignment,misc]


async def test_the_store_contract(tmp_path: Path):
    store = SqliteStore(tmp_path / "state.db", "control")
    assert isinstance(store, Store)
    assert await store.get("secrets", "grant") is None
    await store.put("secrets", "grant", b"\x00one")
    await store.put("secrets", "grant", b"\x00two")
    await store.put("secrets", "reset", b"r")
    assert await store.get("secrets", "grant") == b"\x00two"
    assert await store.keys("secrets") == ["grant", "reset"]
    await store.delete("secrets", "grant")
    await store.delete("secrets", "absent")
    assert await store.keys("secrets") == ["reset"]
    with pytest.raises(StoreError, match="bad key name"):
        await store.put("secrets", "../x", b"")


async def test_components_sharing_a_file_keep_their_own_keys(tmp_path: Path):
    path = tmp_path / "state.db"
    control, relay = SqliteStore(path, "control"), SqliteStore(path, "relay")
    await asyncio.gather(*(s.put("ns", f"k{i}", bytes([i])) for s in (control, relay) for i in range(20)))
    await control.put("ns", "only-control", b"c")
    assert await relay.get("ns", "only-control") is None
    assert len(await control.keys("ns")) == 21 and len(await relay.keys("ns")) == 20


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path):
    bad = tmp_path / "state.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=r"sqlite-store .*state\.db: file is not a database"):
        SqliteStore(bad, "control")


def server_toml(certs: Path, db: Path) -> str:
    return (
        "[server]\n"
        'addr = "127.0.0.1:0"\n'
        'relay-addr = "127.0.0.1:0"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        'tokens = ["t"]\n'
        "[plugins.sqlite-store]\n"
        f'path = "{db}"\n'
    )


def relay_hash(server: Daemon) -> str:
    return server.wait_for(r"relay certificate sha256 ([0-9a-f]{64})").group(1)


def test_identity_survives_a_restart_and_two_components_share_the_file(tmp_path, certs, daemons):
    db = tmp_path / "state.db"
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, db))
    first = Daemon(["server", "--config", str(config)])
    daemons.append(first)
    before = relay_hash(first)
    first.stop()
    assert first.proc.returncode == 0

    again = Daemon(["server", "--config", str(config)])
    daemons.append(again)
    assert relay_hash(again) == before  # the relay's identity came back from the file
    # the server's control and relay parts are two components in the one file
    with sqlite3.connect(db) as conn:
        components = {row[0] for row in conn.execute("SELECT DISTINCT component FROM state")}
    assert components == {"control", "relay"}

    other = tmp_path / "other.toml"
    other.write_text(server_toml(certs, tmp_path / "other.db"))
    fresh = Daemon(["server", "--config", str(other)])
    daemons.append(fresh)
    assert relay_hash(fresh) != before


def test_a_bad_path_setting_is_one_line_and_exit_2(tmp_path, certs):
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, tmp_path / "x.db").replace(f'path = "{tmp_path / "x.db"}"', "path = 3"))
    result = connet("check", "--config", str(config))
    assert result.returncode == 2
    assert "plugins.sqlite-store.path: expected a file or directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

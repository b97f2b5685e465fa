"""The tokens plugin reads a changed tokens file off the event loop, through the safe reader:
a FIFO or a device swapped in is refused with one error and the old set stays in force, and
a read that hangs never holds the caller for more than the plugin's wait budget."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import connet_tokens
import pytest

from connet_core import plugins
from connet_core.model import Principal, PrincipalKind

CLIENT = PrincipalKind.CLIENT


def write_tokens(path: Path, text: str, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


@pytest.fixture
def hooks() -> plugins.Hooks:
    return plugins.load_hooks()


async def test_the_file_is_read_by_a_worker_thread_not_the_event_loop(hooks, tmp_path, monkeypatch) -> None:
    readers: list[threading.Thread] = []
    real = connet_tokens.read_tokens_file

    def recording(path):
        readers.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(connet_tokens, "read_tokens_file", recording)
    path = tmp_path / "tokens"
    write_tokens(path, "alpha\n", mtime=1_000)
    hooks = plugins.load_hooks(plugin_settings={"tokens": {"tokens-file": path}})  # connet server's tokens-file
    assert hooks.authenticate(CLIENT, "alpha") == Principal(CLIENT, "token#0")
    write_tokens(path, "beta\nalpha\n", mtime=2_000)
    assert hooks.authenticate(CLIENT, "alpha") == Principal(CLIENT, "token#1")  # at once
    assert len(readers) == 2
    assert all(t is not threading.current_thread() for t in readers), "a tokens file was read on the event loop"


@pytest.mark.parametrize("replacement", ["fifo", "dev-zero", "directory"])
def test_a_replacement_that_is_not_a_regular_file_keeps_the_old_set(hooks, tmp_path, caplog, monkeypatch,
                                                                    replacement) -> None:
    caplog.set_level(logging.INFO, "connet.tokens")
    reads = []
    real = connet_tokens.read_tokens_file
    monkeypatch.setattr(connet_tokens, "read_tokens_file", lambda p: reads.append(p) or real(p))
    path = tmp_path / "tokens"
    write_tokens(path, "kept\n", mtime=1_000)
    hooks = plugins.load_hooks(plugin_settings={"tokens": {"tokens-file": path}})  # connet server's tokens-file
    assert hooks.authenticate(CLIENT, "kept") is not None
    staged = tmp_path / "staged"
    if replacement == "fifo":
        os.mkfifo(staged)
        os.replace(staged, path)
    elif replacement == "dev-zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    else:
        path.unlink()
        path.mkdir()
    for _ in range(4):  # looked at again and again: one error line, the old set in force
        assert hooks.authenticate(CLIENT, "kept") == Principal(CLIENT, "token#0")
    assert len(reads) == 2, "a refused file is tried again only once it changes"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "not a regular file: keeping the last good set" in errors[0].getMessage()
    if path.is_dir():
        path.rmdir()
    else:
        path.unlink()
    write_tokens(path, "new\n", mtime=3_000)
    assert hooks.authenticate(CLIENT, "new") == Principal(CLIENT, "token#0")
    assert hooks.authenticate(CLIENT, "kept") is None


def test_a_hanging_read_costs_the_caller_one_bounded_wait(hooks, tmp_path, monkeypatch) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, "kept\n", mtime=1_000)
    hooks = plugins.load_hooks(plugin_settings={"tokens": {"tokens-file": path}})  # connet server's tokens-file
    assert hooks.authenticate(CLIENT, "kept") is not None
    release = threading.Event()
    started = threading.Event()
    real = connet_tokens.read_tokens_file

    def hanging(p):
        started.set()
        release.wait(30)  # a dead network file system, until the test lets go
        return real(p)

    monkeypatch.setattr(connet_tokens, "read_tokens_file", hanging)
    monkeypatch.setattr(connet_tokens, "RELOAD_WAIT", 0.01)
    write_tokens(path, "fresh\n", mtime=2_000)
    try:
        for _ in range(3):  # the old set answers while the read hangs
            assert hooks.authenticate(CLIENT, "kept") == Principal(CLIENT, "token#0")
            assert hooks.authenticate(CLIENT, "fresh") is None
        assert started.is_set() and not release.is_set()
    finally:
        release.set()
    # the reader is one worker thread: a job queued behind the read finishes after it
    connet_tokens._reader.submit(lambda: None).result(10)
    assert hooks.authenticate(CLIENT, "fresh") == Principal(CLIENT, "token#0")
    assert hooks.authenticate(CLIENT, "kept") is None

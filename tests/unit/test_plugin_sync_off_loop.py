"""Plain-function decision hooks run in worker threads under the async hooks' time limit: one
that blocks holds a worker, never the event loop, and a timeout is that plugin's failure."""

from __future__ import annotations

import asyncio
import ipaddress
import threading

import pytest

from connet_core import hookimpl, plugins
from connet_core.errors import PluginError
from connet_core.hook_threads import HookThreads
from connet_core.model import Principal, PrincipalKind

CLIENT = PrincipalKind.CLIENT
AUTH = {"tokens": {"tokens": ("known",)}}  # the tokens plugin's [server] tokens
HERE = ipaddress.ip_address("127.0.0.1")


class BlockingDirectory:
    """A synchronous client library: blocks its thread until released (or for good)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: set[str] = set()

    @hookimpl
    def connet_authenticate(self, kind, token):
        self.threads.add(threading.current_thread().name)
        if token == "blocks":
            self.entered.set()
            self.release.wait(30)
            return Principal(kind, label="released")
        return None

    @hookimpl
    def connet_authorize(self, name):
        self.threads.add(threading.current_thread().name)
        if name == "blocks":
            self.entered.set()
            self.release.wait(30)
        return None


async def test_a_blocking_sync_hook_leaves_the_loop_running_and_answers_when_it_returns():
    directory = BlockingDirectory()
    hooks = plugins.load_hooks(extra_plugins=[directory], plugin_settings=AUTH)
    pending = asyncio.ensure_future(hooks.authenticate_async(CLIENT, "blocks"))
    # the loop turns while the plugin blocks: this task runs, and sees the plugin inside
    await asyncio.get_running_loop().run_in_executor(None, directory.entered.wait, 10)
    ticks = 0
    for _ in range(20):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 20 and not pending.done()
    directory.release.set()
    assert await pending == Principal(CLIENT, label="released")
    assert directory.threads and all(name.startswith("connet-hook") for name in directory.threads)


async def test_a_sync_hook_that_blocks_too_long_is_that_plugins_timeout_and_counted():
    directory = BlockingDirectory()
    hooks = plugins.load_hooks(extra_plugins=[directory], plugin_settings=AUTH)
    hooks.hook_timeout = 0.2
    try:
        with pytest.raises(PluginError,
                           match=r"plugin 'BlockingDirectory' failed in connet_authorize: timed out after 0.2s"):
            await hooks.authorize_async(Principal(CLIENT), HERE, "blocks")
        assert hooks.errors[("BlockingDirectory", "connet_authorize")] == 1
        # the other decisions still answer, from the other workers
        assert await hooks.authenticate_async(CLIENT, "known") == Principal(CLIENT, "token#0")
    finally:
        directory.release.set()


async def test_the_default_plugins_answer_from_worker_threads_as_before():
    hooks = plugins.load_hooks(plugin_settings=AUTH)
    assert await hooks.authenticate_async(CLIENT, "known") == Principal(CLIENT, "token#0")
    assert await hooks.authenticate_async(CLIENT, "unknown") is None
    assert await hooks.admit_address_async(CLIENT, HERE) is None


async def test_a_call_whose_time_ran_out_in_the_queue_is_never_run():
    threads = HookThreads(workers=1)
    gate, busy = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> bool:
        busy.set()
        return gate.wait(30)

    first = asyncio.ensure_future(threads.run(hold))
    await asyncio.get_running_loop().run_in_executor(None, busy.wait, 10)  # the one worker is taken
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await threads.run(ran.append, "late")
    gate.set()
    assert await first is True
    assert await threads.run(ran.append, "on time") is None
    assert ran == ["on time"]


async def test_an_exception_in_the_worker_reaches_the_caller():
    threads = HookThreads(workers=1)

    def fails() -> None:
        raise LookupError("no such user")

    with pytest.raises(LookupError, match="no such user"):
        await threads.run(fails)

"""The shared-state seam's contract (connet_core/shared_state.py), run against every
implementation: the ``memory`` default (instances sharing one hub, as engines in one process
do) and the ``redis`` plugin against a real redis-server started here."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from connet_core.errors import PluginError, StoreError
from connet_core.plugins import load_hooks
from connet_core.shared_state import (
    Change,
    RelayGone,
    SharedAnnouncement,
    SharedRelay,
    SharedState,
    Withdrawn,
)
from connet_memory import MemoryHub, MemoryState
from support.redis_server import RedisServer, TcpProxy, need_redis_client


class Watched:
    """One instance and the changes it was told about."""

    def __init__(self, state: SharedState) -> None:
        self.state = state
        self.changes: list[Change] = []
        self._news = asyncio.Event()
        self.task: asyncio.Task | None = None

    def listen(self, change: Change) -> None:
        self.changes.append(change)
        self._news.set()

    async def until(self, predicate: Callable[[list[Change]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.changes):
                self._news.clear()
                await self._news.wait()

    def seen(self) -> set[tuple]:
        """The announcements this instance currently knows of the others (from its changes)."""
        view: dict[tuple, SharedAnnouncement] = {}
        for change in self.changes:
            if isinstance(change, SharedAnnouncement):
                view[(change.instance, *change.key)] = change
            elif isinstance(change, Withdrawn):
                view.pop((change.instance, change.session, change.name, change.role), None)
        return {(k[0], k[2], k[3]) for k in view}


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """For a flag with no event of its own (``healthy``): look again each loop turn."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def make(request, tmp_path: Path) -> AsyncIterator[Callable[..., "asyncio.Future[Watched]"]]:
    """``await make()`` opens another instance of one deployment."""
    made: list[Watched] = []
    cleanup: list[Callable[[], None]] = []
    if request.param == "memory":
        hub = MemoryHub()

        def new_state(url: str | None = None) -> SharedState:
            return MemoryState(hub)
    else:
        server = request.getfixturevalue("redis_server")
        cleanup.append(server.stop)

        def new_state(url: str | None = None) -> SharedState:
            settings = {"redis": {"url": url or server.url, "expiry": 1.0, "refresh-interval": 0.25}}
            return load_hooks(plugin_settings=settings).shared_state("control")

    async def open_one(url: str | None = None) -> Watched:
        watched = Watched(new_state(url))
        await watched.state.open(watched.listen)
        watched.task = asyncio.create_task(watched.state.run())
        made.append(watched)
        return watched

    open_one.kind = request.param  # type: ignore[attr-defined]
    open_one.server = request.getfixturevalue("redis_server") if request.param == "redis" else None  # type: ignore
    yield open_one
    for watched in made:
        if watched.task is not None:
            watched.task.cancel()
            await asyncio.gather(watched.task, return_exceptions=True)
        await watched.state.close()
    for step in cleanup:
        step()


def ann(state: SharedState, session: int, name: str = "web", role: str = "destination") -> SharedAnnouncement:
    return SharedAnnouncement(state.instance, session, name, role, "any", b"cert-%d" % session, ("10.0.0.1:1",))


def test_the_facade_gives_the_memory_default_without_a_redis_url() -> None:
    hooks = load_hooks()
    state = hooks.shared_state("control")
    assert isinstance(state, MemoryState) and state.healthy


def test_the_facade_gives_redis_when_its_url_is_set_and_refuses_a_bad_interval() -> None:
    need_redis_client()
    from connet_redis.state import RedisState

    hooks = load_hooks(plugin_settings={"redis": {"url": "redis://127.0.0.1:1/0"}})
    state = hooks.shared_state("control")  # no I/O yet: open() connects
    assert isinstance(state, RedisState) and (state.expiry, state.refresh) == (10.0, 2.0)
    hooks = load_hooks(plugin_settings={"redis": {"url": "redis://127.0.0.1:1/0", "expiry": 2, "refresh-interval": 5}})
    with pytest.raises(PluginError, match="refresh-interval"):
        hooks.shared_state("control")


async def test_an_unreachable_redis_is_one_store_error_at_open(tmp_path: Path) -> None:
    from support.redis_server import free_tcp_port

    need_redis_client()
    hooks = load_hooks(plugin_settings={"redis": {"url": f"redis://127.0.0.1:{free_tcp_port()}/0"}})
    state = hooks.shared_state("control")
    with pytest.raises(StoreError, match="plugins.redis: cannot reach"):
        await state.open(lambda change: None)


async def test_announcements_reach_the_others_never_the_owner(make) -> None:
    a, b = await make(), await make()
    a.state.announce(ann(a.state, 1))
    a.state.announce(ann(a.state, 2, "web", "source"))
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination"), (a.state.instance, "web", "source")})
    a.state.withdraw(1, "web", "destination")
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "source")})
    a.state.drop_session(2)
    await b.until(lambda _: b.seen() == set())
    assert a.changes == []  # nobody tells an instance about its own entries


async def test_a_late_instance_learns_what_the_others_hold(make) -> None:
    a = await make()
    a.state.announce(ann(a.state, 7, "db"))
    a.state.add_relay(SharedRelay(a.state.instance, "relay.example:19191", b"relay-cert"))
    if make.kind == "redis":  # a's own task writes it: a witness seeing it means it landed
        witness = await make()
        await witness.until(lambda _: (a.state.instance, "db", "destination") in witness.seen())
    b = await make()
    await b.until(lambda ch: (a.state.instance, "db", "destination") in b.seen()
                  and any(isinstance(c, SharedRelay) for c in ch))
    relay = next(c for c in b.changes if isinstance(c, SharedRelay))
    assert (relay.addr, relay.certificate, relay.instance) == ("relay.example:19191", b"relay-cert", a.state.instance)
    a.state.remove_relay(b"relay-cert")
    await b.until(lambda ch: any(isinstance(c, RelayGone) and c.certificate == b"relay-cert" for c in ch))


async def test_the_nat_kind_and_a_relays_metadata_and_tcp_address_arrive_whole(make) -> None:
    """Every field the Matcher and the relay list use crosses: live (one change) and for an
    instance that joins later (the Redis re-read), so a client on another instance sees a
    peer's NAT kind and a relay's label and TCP address."""
    a, b = await make(), await make()
    sent_ann = dataclasses.replace(ann(a.state, 3), nat="hard")
    sent_relay = SharedRelay(a.state.instance, "relay.example:19191", b"relay-cert", "rack 7", "relay.example:443")
    a.state.announce(sent_ann)
    a.state.add_relay(sent_relay)
    for watcher in (b, await make()):
        await watcher.until(lambda ch: sent_ann in ch and sent_relay in ch)


async def test_the_first_proposed_secret_wins_everywhere(make) -> None:
    a, b = await make(), await make()
    first = await a.state.secret("grant-secret", b"A" * 32)
    second = await b.state.secret("grant-secret", b"B" * 32)
    assert first == second == b"A" * 32
    assert await b.state.secret("reset-key", b"C" * 32) == b"C" * 32


async def test_a_clean_stop_withdraws_everything_at_once(make) -> None:
    a, b = await make(), await make()
    a.state.announce(ann(a.state, 1))
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination")})
    a.task.cancel()
    await asyncio.gather(a.task, return_exceptions=True)
    a.task = None
    await a.state.close()
    await b.until(lambda _: b.seen() == set(), timeout=0.5 if make.kind == "redis" else 10.0)  # not after expiry


async def test_an_instance_that_vanishes_expires_from_the_others(make) -> None:
    if make.kind == "memory":
        pytest.skip("one process: an instance cannot vanish without its hub")
    a, b = await make(), await make()
    a.state.announce(ann(a.state, 1))
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination")})
    a.task.cancel()  # stops refreshing, says nothing: what a killed process does
    await asyncio.gather(a.task, return_exceptions=True)
    a.task = None
    loop = asyncio.get_running_loop()
    started = loop.time()
    await b.until(lambda _: b.seen() == set(), timeout=5.0)
    assert loop.time() - started <= a.state.expiry + 2 * a.state.refresh + 0.5  # the documented bound
    a.state._redis = None  # closed below without withdrawing: it is "dead"


async def test_a_restarted_redis_gets_everything_again(make) -> None:
    if make.kind == "memory":
        pytest.skip("no server to restart")
    a, b = await make(), await make()
    a.state.announce(ann(a.state, 1))
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination")})
    secret = await a.state.secret("grant-secret", b"A" * 32)
    before = a.state.counters["rewrites"]
    make.server.restart()
    await b.until(lambda _: a.state.counters["rewrites"] > before and a.state.healthy, timeout=10)
    a.state.announce(ann(a.state, 2, "db"))
    await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination"),
                                         (a.state.instance, "db", "destination")})
    # the secrets came back with the rest: an instance that starts now agrees with the others
    assert await b.state.secret("grant-secret", b"X" * 32) == secret


async def test_a_partitioned_instance_turns_unhealthy_then_stale(make, redis_server) -> None:
    if make.kind == "memory":
        pytest.skip("no partition in one process")
    proxy = TcpProxy(redis_server.port)
    try:
        a, b = await make(proxy.url), await make()
        a.state.announce(ann(a.state, 1))
        await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination")})
        proxy.pause()
        await a.until(lambda ch: any(type(c).__name__ == "Stale" for c in ch), timeout=10)
        assert not a.state.healthy
        await b.until(lambda _: b.seen() == set(), timeout=10)  # expired on the others meanwhile
        proxy.resume()
        await b.until(lambda _: b.seen() == {(a.state.instance, "web", "destination")}, timeout=10)
        await eventually(lambda: a.state.healthy)
    finally:
        proxy.stop()


async def test_a_redis_that_is_down_is_retried_at_a_pace_and_makes_every_instance_stale(make) -> None:
    if make.kind == "memory":
        pytest.skip("no server to lose")
    a, b = await make(), await make()
    make.server.stop()  # connections refused at once: the retry must not spin
    for watched in (a, b):
        await watched.until(lambda ch: any(type(c).__name__ == "Stale" for c in ch), timeout=10)
        assert not watched.state.healthy
    # expiry 1 s, retries every refresh-interval / 4 (62 ms): some 20 errors, not thousands
    assert a.state.counters["errors"] < 100
    make.server.start()
    await eventually(lambda: a.state.healthy and b.state.healthy, timeout=10)

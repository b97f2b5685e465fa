"""The shared state in Redis: each instance owns its keys, refreshes their expiry and
publishes every change; the others apply the changes in order and re-read an instance
whole when they missed one.

Keys (``P`` the key prefix, ``I`` an instance id)::

    P:secret:NAME    the deployment's secrets (SET NX: the first proposal wins; written
                     again, NX, with everything else after Redis lost them)
    P:instance:I     I's generation, a number bumped by every change of I; expires
    P:ann:I          hash: I's announcements (msgpack), expires with P:instance:I
    P:relay:I        hash: the relays registered with I (msgpack), expires likewise
    P:changes        channel: [I, generation, op, payload] for each change

Only I writes I's keys, from one task, so its generation is a plain counter. A reader that
sees generation g+1 after g applies the change; a gap (a lost message, a reconnect) or a
generation seen by the periodic scan that differs from the known one re-reads I in one
MULTI. An instance key that vanished (I died, or Redis restarted and lost everything)
withdraws I's entries; I itself notices its key is gone at its next refresh and writes
everything again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connet_core.errors import StoreError
from connet_core.shared_state import (
    Change,
    Listener,
    LocalEntries,
    RelayGone,
    SharedAnnouncement,
    SharedRelay,
    Stale,
    Withdrawn,
)

log = logging.getLogger("connet.redis")

_ANNOUNCE, _WITHDRAW, _RELAY, _RELAY_GONE, _REWRITTEN, _LEAVING = "a", "w", "r", "g", "f", "x"


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _field(session: int, name: str, role: str) -> bytes:
    return _pack([session, name, role])


class _Remote:
    """What this instance knows of another one."""

    def __init__(self) -> None:
        self.generation = 0
        self.announcements: dict[tuple[int, str, str], SharedAnnouncement] = {}
        self.relays: dict[bytes, SharedRelay] = {}


def _redacted(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{url.split('://')[0]}://***@{tail}" if sep else url


class RedisState:
    def __init__(self, url: str, *, prefix: str, expiry: float, refresh: float) -> None:
        self.url = url
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self.healthy = False
        self.local = LocalEntries()
        self.expiry = expiry
        self.refresh = refresh
        self._p = prefix
        self._channel = f"{prefix}:changes"
        self._redis: Any = None
        self._listener: Listener | None = None
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._generation = 0
        self._secrets: dict[str, bytes] = {}  # written again with our keys after Redis lost them
        self._rewrite = True  # write everything at the next step (at start, after a loss)
        self._remotes: dict[str, _Remote] = {}
        self._view_lock = asyncio.Lock()
        self._last_ok = time.monotonic()
        self._stale = False
        self.counters = {"rewrites": 0, "resyncs": 0, "errors": 0}

    # ---- keys ----------------------------------------------------------------------------

    def _key(self, kind: str, instance: str) -> str:
        return f"{self._p}:{kind}:{instance}"

    # ---- the seam ------------------------------------------------------------------------

    async def open(self, listener: Listener) -> None:
        self._listener = listener
        timeout = self.refresh
        self._redis = aioredis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            await self._redis.ping()
            await self._write_all()
            await self._sync_all()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            raise StoreError(f"plugins.redis: cannot reach {_redacted(self.url)}: {exc}") from None
        self._ok()

    async def secret(self, name: str, proposed: bytes) -> bytes:
        key = f"{self._p}:secret:{name}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, proposed, nx=True)
                pipe.get(key)
                _, value = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreError(f"plugins.redis: cannot read secret {name}: {exc}") from None
        self._secrets[name] = value
        return value

    async def run(self) -> None:
        subscriber = asyncio.ensure_future(self._follow())
        try:
            await self._own_loop()
        finally:
            subscriber.cancel()
            await asyncio.gather(subscriber, return_exceptions=True)

    async def close(self) -> None:
        if self._redis is None:
            return
        try:  # a clean stop: the others forget us now rather than after the expiry
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key("instance", self.instance), self._key("ann", self.instance),
                            self._key("relay", self.instance))
                pipe.publish(self._channel, _pack([self.instance, self._generation + 1, _LEAVING, None]))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("redis: could not withdraw this instance on stop (the others expire it): %s", exc)
        finally:
            await self._redis.aclose()
            self._redis = None

    def announce(self, announcement: SharedAnnouncement) -> None:
        if self.local.announce(announcement):
            self._queue.put_nowait((_ANNOUNCE, announcement))

    def withdraw(self, session: int, name: str, role: str) -> None:
        if self.local.withdraw(session, name, role):
            self._queue.put_nowait((_WITHDRAW, (session, name, role)))

    def drop_session(self, session: int) -> None:
        for _, name, role in self.local.session_keys(session):
            self.withdraw(session, name, role)

    def add_relay(self, relay: SharedRelay) -> None:
        self.local.relays[relay.certificate] = relay
        self._queue.put_nowait((_RELAY, relay))

    def remove_relay(self, certificate: bytes) -> None:
        if self.local.relays.pop(certificate, None) is not None:
            self._queue.put_nowait((_RELAY_GONE, certificate))

    def status(self) -> dict:
        return {"backend": "redis", "url": _redacted(self.url), "instance": self.instance, "healthy": self.healthy,
                "instances": 1 + len(self._remotes), "announcements": len(self.local.announcements),
                "remote_announcements": sum(len(r.announcements) for r in self._remotes.values()),
                "relays": len(self.local.relays), "expiry": self.expiry, "counters": dict(self.counters)}

    # ---- health --------------------------------------------------------------------------

    def _ok(self) -> None:
        if not self.healthy:
            log.info("redis %s reachable: instance %s serving", _redacted(self.url), self.instance)
        self.healthy = True
        self._stale = False
        self._last_ok = time.monotonic()

    def _failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self._rewrite = True  # whatever was lost is written whole when Redis answers again
        if self.healthy:
            log.error("redis %s unreachable (%s): refusing new clients", _redacted(self.url), exc)
        self.healthy = False
        if not self._stale and time.monotonic() - self._last_ok > self.expiry:
            self._stale = True
            self._remotes.clear()
            self._emit(Stale())

    def _emit(self, change: Change) -> None:
        if self._listener is not None:
            self._listener(change)

    # ---- this instance's keys --------------------------------------------------------------

    async def _own_loop(self) -> None:
        """One task writes this instance's keys: changes as they come, a refresh and a scan
        of the others every ``refresh`` seconds."""
        next_refresh = time.monotonic()
        while True:
            try:
                wait = max(0.0, next_refresh - time.monotonic())
                try:
                    op = await asyncio.wait_for(self._queue.get(), wait) if wait > 0 else None
                except TimeoutError:
                    op = None
                if self._rewrite:
                    self._drain()
                    await self._write_all()
                elif op is not None:
                    await self._write(*op)
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self.refresh
                    await self._refresh()
                    await self._sync_all()
                self._ok()
            except (RedisError, OSError) as exc:
                self._failed(exc)
                # a refused connection fails at once: pace the retries rather than spin
                await asyncio.sleep(self.refresh / 4)
                next_refresh = min(next_refresh, time.monotonic())

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()  # a rewrite takes the local entries as they are now

    def _expiring(self, pipe: Any) -> None:
        ms = int(self.expiry * 1000)
        pipe.set(self._key("instance", self.instance), self._generation, px=ms)
        pipe.pexpire(self._key("ann", self.instance), ms)
        pipe.pexpire(self._key("relay", self.instance), ms)

    async def _write(self, op: str, payload: Any) -> None:
        self._generation += 1
        ann_key, relay_key = self._key("ann", self.instance), self._key("relay", self.instance)
        async with self._redis.pipeline(transaction=True) as pipe:
            if op == _ANNOUNCE:
                a = payload
                data = _announcement_data(a)
                pipe.hset(ann_key, _field(a.session, a.name, a.role), _pack(data))
            elif op == _WITHDRAW:
                pipe.hdel(ann_key, _field(*payload))
                data = list(payload)
            elif op == _RELAY:
                data = _relay_data(payload)
                pipe.hset(relay_key, payload.certificate, _pack(data))
            else:
                pipe.hdel(relay_key, payload)
                data = payload
            self._expiring(pipe)
            pipe.publish(self._channel, _pack([self.instance, self._generation, op, data]))
            await pipe.execute()

    async def _write_all(self) -> None:
        self._generation += 1
        self._rewrite = False
        self.counters["rewrites"] += 1
        ann_key, relay_key = self._key("ann", self.instance), self._key("relay", self.instance)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(ann_key, relay_key)
                for name, value in self._secrets.items():  # a restarted Redis: an instance that
                    pipe.set(f"{self._p}:secret:{name}", value, nx=True)  # starts later agrees
                for a in self.local.announcements.values():
                    pipe.hset(ann_key, _field(a.session, a.name, a.role),
                              _pack(_announcement_data(a)))
                for r in self.local.relays.values():
                    pipe.hset(relay_key, r.certificate, _pack(_relay_data(r)))
                self._expiring(pipe)
                pipe.publish(self._channel, _pack([self.instance, self._generation, _REWRITTEN, None]))
                await pipe.execute()
        except BaseException:
            self._rewrite = True
            raise

    async def _refresh(self) -> None:
        ms = int(self.expiry * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.pexpire(self._key("instance", self.instance), ms)
            pipe.pexpire(self._key("ann", self.instance), ms)
            pipe.pexpire(self._key("relay", self.instance), ms)
            alive, _, _ = await pipe.execute()
        if not alive:  # Redis restarted, was flushed, or we were cut off past the expiry
            log.warning("redis lost this instance's keys: writing them again")
            await self._write_all()

    # ---- the others --------------------------------------------------------------------

    async def _follow(self) -> None:
        """Apply the others' changes as published; reconnect and re-read after a loss."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                await self._sync_all()  # whatever was published while we were not listening
                while True:
                    message = await pubsub.get_message(timeout=self.refresh)
                    if message is not None and message.get("type") == "message":
                        await self._apply(message["data"])
            except (RedisError, OSError) as exc:
                log.debug("redis subscription lost: %s", exc)
                await asyncio.sleep(self.refresh / 4)
            finally:
                await pubsub.aclose()

    async def _apply(self, data: bytes) -> None:
        try:
            instance, generation, op, payload = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("redis: ignored a malformed change message: %s", exc)
            return
        if instance == self.instance:
            return
        async with self._view_lock:
            remote = self._remotes.get(instance)
            if op == _LEAVING:
                self._forget(instance)
                return
            known = remote.generation if remote is not None else 0
            if generation <= known:
                return  # already read whole at this generation or later
            if remote is None or generation != known + 1 or op == _REWRITTEN:
                await self._resync(instance)
                return
            remote.generation = generation
            self._change(instance, remote, op, payload)

    def _change(self, instance: str, remote: _Remote, op: str, payload: Any) -> None:
        if op == _ANNOUNCE:
            ann = _announcement(instance, payload)
            if remote.announcements.get(ann.key) != ann:
                remote.announcements[ann.key] = ann
                self._emit(ann)
        elif op == _WITHDRAW:
            session, name, role = payload
            if remote.announcements.pop((session, name, role), None) is not None:
                self._emit(Withdrawn(instance, session, name, role))
        elif op == _RELAY:
            relay = _relay(instance, payload)
            remote.relays[relay.certificate] = relay
            self._emit(relay)
        elif op == _RELAY_GONE:
            if remote.relays.pop(payload, None) is not None:
                self._emit(RelayGone(instance, payload))

    async def _sync_all(self) -> None:
        """Scan the live instances: re-read those whose generation moved unseen, forget
        those whose key expired."""
        names = [key async for key in self._redis.scan_iter(match=f"{self._p}:instance:*", count=500)]
        others = [k.decode().rsplit(":", 1)[1] for k in names]
        others = [i for i in others if i != self.instance]
        generations = await self._redis.mget([self._key("instance", i) for i in others]) if others else []
        alive = {i: int(g) for i, g in zip(others, generations) if g is not None}
        async with self._view_lock:
            for instance in list(self._remotes):
                if instance not in alive:
                    log.info("redis: instance %s expired; withdrawing its entries", instance)
                    self._forget(instance)
            for instance, generation in alive.items():
                remote = self._remotes.get(instance)
                if remote is None or remote.generation != generation:
                    await self._resync(instance)

    async def _resync(self, instance: str) -> None:
        """Read one instance whole (one MULTI: a consistent snapshot) and emit the difference."""
        self.counters["resyncs"] += 1
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("instance", instance))
            pipe.hgetall(self._key("ann", instance))
            pipe.hgetall(self._key("relay", instance))
            generation, anns, relays = await pipe.execute()
        if generation is None:
            self._forget(instance)
            return
        remote = self._remotes.setdefault(instance, _Remote())
        remote.generation = int(generation)
        fresh = {a.key: a for a in (_announcement(instance, msgpack.unpackb(v, raw=False)) for v in anns.values())}
        fresh_relays = {}
        for value in relays.values():
            relay = _relay(instance, msgpack.unpackb(value, raw=False))
            fresh_relays[relay.certificate] = relay
        for key in [k for k in remote.announcements if k not in fresh]:
            del remote.announcements[key]
            self._emit(Withdrawn(instance, *key))
        for key, ann in fresh.items():
            if remote.announcements.get(key) != ann:
                remote.announcements[key] = ann
                self._emit(ann)
        for certificate in [c for c in remote.relays if c not in fresh_relays]:
            del remote.relays[certificate]
            self._emit(RelayGone(instance, certificate))
        for certificate, relay in fresh_relays.items():
            if remote.relays.get(certificate) != relay:
                remote.relays[certificate] = relay
                self._emit(relay)

    def _forget(self, instance: str) -> None:
        remote = self._remotes.pop(instance, None)
        if remote is None:
            return
        for key in remote.announcements:
            self._emit(Withdrawn(instance, *key))
        for certificate in remote.relays:
            self._emit(RelayGone(instance, certificate))


# The encodings are lists; fields added later go at the end and default when absent, so
# instances of two versions share one deployment during an upgrade.
def _announcement_data(a: SharedAnnouncement) -> list:
    return [a.session, a.name, a.role, a.route, a.certificate, list(a.addresses), a.nat]


def _announcement(instance: str, data: list) -> SharedAnnouncement:
    session, name, role, route, certificate, addresses, *later = data
    nat = later[0] if later else ""
    return SharedAnnouncement(instance, session, name, role, route, certificate, tuple(addresses), nat)


def _relay_data(r: SharedRelay) -> list:
    return [r.addr, r.certificate, r.metadata, r.tcp_addr]


def _relay(instance: str, data: list) -> SharedRelay:
    addr, certificate, *later = data
    metadata, tcp_addr = (list(later) + ["", ""])[:2]
    return SharedRelay(instance, addr, certificate, metadata, tcp_addr)

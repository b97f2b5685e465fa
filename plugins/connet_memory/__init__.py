"""Default plugin ``memory``: the control plane's shared state kept in this one process.

With one control process there is nothing to share: the state is a :class:`MemoryHub` of
one. Several :class:`Control` engines embedded in one program (the engine unit tests) can be
given one hub, and then behave as instances of one deployment, as they would behind Redis.
Remote changes are delivered on the next loop iteration, never inside the caller's call, so
the engines see the same ordering as over a network.
"""

from __future__ import annotations

import asyncio
import itertools
import os

from connet_core import hookimpl
from connet_core.shared_state import (
    Change,
    Listener,
    LocalEntries,
    RelayGone,
    SharedAnnouncement,
    SharedRelay,
    Withdrawn,
)

__all__ = ["MemoryHub", "MemoryState", "connet_shared_state"]

_instances = itertools.count(1)


class MemoryHub:
    """The state every member sees: the secrets and each member's entries."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.members: list[MemoryState] = []

    def broadcast(self, sender: "MemoryState", change: Change) -> None:
        for member in self.members:
            if member is not sender:
                member.receive(change)


class MemoryState:
    """A :class:`connet_core.shared_state.SharedState` in one process."""

    def __init__(self, hub: MemoryHub | None = None, instance: str | None = None) -> None:
        self.hub = hub or MemoryHub()
        self.instance = instance or f"{os.getpid()}-{next(_instances)}"
        self.healthy = True
        self.local = LocalEntries()
        self._listener: Listener | None = None

    async def open(self, listener: Listener) -> None:
        self._listener = listener
        for member in self.hub.members:  # what the others hold already
            for ann in member.local.announcements.values():
                self.receive(ann)
            for relay in member.local.relays.values():
                self.receive(relay)
        self.hub.members.append(self)

    def receive(self, change: Change) -> None:
        listener = self._listener
        if listener is not None:
            asyncio.get_running_loop().call_soon(listener, change)

    async def secret(self, name: str, proposed: bytes) -> bytes:
        return self.hub.secrets.setdefault(name, proposed)

    async def run(self) -> None:
        await asyncio.Event().wait()  # nothing to refresh in one process

    async def close(self) -> None:
        """Leave the hub, withdrawing everything (what the others see of a clean stop)."""
        if self in self.hub.members:
            self.hub.members.remove(self)
            for session, name, role in list(self.local.announcements):
                self.hub.broadcast(self, Withdrawn(self.instance, session, name, role))
            for certificate in list(self.local.relays):
                self.hub.broadcast(self, RelayGone(self.instance, certificate))
        self._listener = None

    def announce(self, announcement: SharedAnnouncement) -> None:
        if self.local.announce(announcement):
            self.hub.broadcast(self, announcement)

    def withdraw(self, session: int, name: str, role: str) -> None:
        if self.local.withdraw(session, name, role):
            self.hub.broadcast(self, Withdrawn(self.instance, session, name, role))

    def drop_session(self, session: int) -> None:
        for _, name, role in self.local.session_keys(session):
            self.withdraw(session, name, role)

    def add_relay(self, relay: SharedRelay) -> None:
        self.local.relays[relay.certificate] = relay
        self.hub.broadcast(self, relay)

    def remove_relay(self, certificate: bytes) -> None:
        if self.local.relays.pop(certificate, None) is not None:
            self.hub.broadcast(self, RelayGone(self.instance, certificate))

    def status(self) -> dict:
        return {"backend": "memory", "instance": self.instance, "healthy": self.healthy,
                "instances": len(self.hub.members), "announcements": len(self.local.announcements),
                "relays": len(self.local.relays)}


@hookimpl(trylast=True)
def connet_shared_state(component: str) -> MemoryState:
    return MemoryState()

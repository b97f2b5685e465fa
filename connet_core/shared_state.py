"""The shared-state seam's objects: what control instances of one deployment share.

One control process keeps everything in memory (the default ``memory`` plugin). Several
control instances behind one address list share, through a plugin (``redis``), who is
connected and what each client announces, which relays exist, and the secrets every
instance must hold alike (the grant secret, the stateless-reset key). Each instance keeps
its own :class:`connet_core.protocol.matching.Matcher`; the shared state feeds it the other
instances' announcements, so matching stays in one place.

The contract (``tests/unit/test_shared_state_contract.py`` runs it against every
implementation):

- local changes are handed in without waiting (``announce``, ``withdraw``, ``drop_session``,
  ``add_relay``, ``remove_relay``) and reach the other instances in order;
- every other instance's change arrives as one :data:`Change` through the listener given
  to ``open``, never the instance's own; an instance that vanishes without a word has its
  announcements and relays withdrawn within ``expiry`` seconds (plus one refresh);
- ``secret(name, proposed)`` answers the same bytes on every instance: the first proposal
  wins;
- ``healthy`` is False while the instance cannot reach the shared view (control refuses new
  clients then); :class:`Stale` is delivered when that has lasted longer than ``expiry``,
  the time after which the others have forgotten this instance's announcements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union, runtime_checkable


@dataclass(frozen=True, slots=True)
class SharedAnnouncement:
    """One announcement of one client session on one instance."""

    instance: str
    session: int
    name: str
    role: str
    route: str
    certificate: bytes
    addresses: tuple[str, ...]
    nat: str = ""  # "easy", "hard" or "" (Announcement.nat)

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.session, self.name, self.role)


@dataclass(frozen=True, slots=True)
class SharedRelay:
    """A relay registered with (or built into) one instance; grant keys are derived from the
    shared grant secret, so they are never shared themselves."""

    instance: str
    addr: str
    certificate: bytes
    metadata: str = ""  # the relay's label (RelayEntry.metadata)
    tcp_addr: str = ""  # where it also takes QUIC over TLS-over-TCP; "": it does not


@dataclass(frozen=True, slots=True)
class Withdrawn:
    instance: str
    session: int
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class RelayGone:
    instance: str
    certificate: bytes


@dataclass(frozen=True, slots=True)
class Stale:
    """This instance has been cut off from the shared view longer than the others remember
    it: its view of them is stale and they no longer see its clients."""


Change = Union[SharedAnnouncement, Withdrawn, SharedRelay, RelayGone, Stale]
Listener = Callable[[Change], None]


@runtime_checkable
class SharedState(Protocol):
    instance: str  # this instance's id, unique in the deployment
    healthy: bool

    async def open(self, listener: Listener) -> None:
        """Connect and load the other instances' view (delivered through ``listener``).
        Raises :class:`connet_core.errors.StoreError` when the shared state is unreachable."""

    async def secret(self, name: str, proposed: bytes) -> bytes:
        """The deployment's value of secret ``name``; ``proposed`` becomes it if none exists."""

    async def run(self) -> None:
        """Keep this instance's entries alive and the view in sync, until cancelled."""

    async def close(self) -> None:
        """Withdraw this instance's entries (a clean stop) and disconnect."""

    def announce(self, announcement: SharedAnnouncement) -> None: ...

    def withdraw(self, session: int, name: str, role: str) -> None: ...

    def drop_session(self, session: int) -> None: ...

    def add_relay(self, relay: SharedRelay) -> None: ...

    def remove_relay(self, certificate: bytes) -> None: ...

    def status(self) -> dict:
        """For the status JSON: backend, instance, healthy, peer instances, counts."""


class LocalEntries:
    """What one instance has published, kept by every implementation: re-published whole
    after the shared store lost it (a restart), withdrawn whole on a clean stop."""

    def __init__(self) -> None:
        self.announcements: dict[tuple[int, str, str], SharedAnnouncement] = {}
        self.relays: dict[bytes, SharedRelay] = {}

    def announce(self, ann: SharedAnnouncement) -> bool:
        """Remember ``ann``; False when it is already known unchanged."""
        if self.announcements.get(ann.key) == ann:
            return False
        self.announcements[ann.key] = ann
        return True

    def withdraw(self, session: int, name: str, role: str) -> bool:
        return self.announcements.pop((session, name, role), None) is not None

    def session_keys(self, session: int) -> list[tuple[int, str, str]]:
        return [key for key in self.announcements if key[0] == session]

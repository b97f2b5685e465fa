"""What control learns from the other instances of its deployment (docs/scaling.md): their
announcements go into this instance's Matcher under ids of their own, their relays into its
relay list (with grant keys from the shared grant secret). And what it tells them of its
own announcements, in step with endpoint expiry (:class:`Published`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connet_core.model import Role, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.matching import Announcement, Key
from connet_core.shared_state import Change, RelayGone, SharedAnnouncement, SharedRelay, SharedState, Stale, Withdrawn
from connet_core.transport import Connection

if TYPE_CHECKING:
    from connet_core.control import Control

log = logging.getLogger("connet.control")


@dataclass(eq=False)
class RelayEntry:
    """A relay clients may use: where it is, its certificate, the key its grants carry."""

    addr: str
    certificate: bytes
    grant_key: bytes
    conn: Connection | None = None  # None for the relay built into ``connet server`` and remote ones
    metadata: str = ""
    tcp_addr: str = ""  # where it also takes QUIC over TLS-over-TCP; "": it does not
    instance: str | None = None  # the control instance it registered with, when not this one


class OtherInstances:
    """The listener control gives its shared state. A part of the control engine kept in its
    own module: it uses the engine's delivery, relay push and session ids directly."""

    def __init__(self, control: "Control") -> None:
        self._control = control
        self._ids: dict[tuple[str, int], int] = {}  # (instance, its session) -> matcher id
        self._held: dict[int, set[tuple[str, Role]]] = {}  # matcher id -> what it announces
        self._early: list[Change] | None = []  # news from before the grant secret is known

    def ready(self) -> None:
        """The grant secret is known: apply what came before it (relays need their keys)."""
        early, self._early = self._early or [], None
        for change in early:
            self.change(change)

    def remote(self, session_id: int) -> bool:
        """Whether a Matcher session id stands for another instance's session."""
        return session_id in self._held

    def change(self, change: Change) -> None:
        control = self._control
        if self._early is not None:
            self._early.append(change)
        elif isinstance(change, SharedAnnouncement):
            key = (change.instance, change.session)
            session_id = self._ids.get(key)
            if session_id is None:
                session_id = self._ids[key] = next(control._ids)  # never a local session's id
            self._held.setdefault(session_id, set()).add((change.name, Role(change.role)))
            control._deliver(control.matcher.announce(Announcement(
                session_id, change.name, Role(change.role), change.route, change.certificate, change.addresses,
                change.nat)))
        elif isinstance(change, Withdrawn):
            key = (change.instance, change.session)
            session_id = self._ids.get(key)
            if session_id is not None:
                control._deliver(control.matcher.withdraw(session_id, change.name, Role(change.role)))
                held = self._held[session_id]
                held.discard((change.name, Role(change.role)))
                if not held:  # that session is gone: forget its id
                    del self._held[session_id], self._ids[key]
        elif isinstance(change, SharedRelay):
            key = certificate_hash(change.certificate)
            current = control.relays.get(key)
            if current is None or current.instance is not None:  # one registered here wins
                control.relays[key] = RelayEntry(change.addr, change.certificate,
                                                 control.grant_key_for(change.certificate), metadata=change.metadata,
                                                 tcp_addr=change.tcp_addr, instance=change.instance)
                control._push_relays()
        elif isinstance(change, RelayGone):
            key = certificate_hash(change.certificate)
            entry = control.relays.get(key)
            if entry is not None and entry.instance == change.instance:
                del control.relays[key]
                control._push_relays()
        elif isinstance(change, Stale):
            self._forget()

    def _forget(self) -> None:
        """Cut off from the shared view longer than the others remember us: they no longer
        see our clients, and what we know of theirs is stale. Our clients go to an instance
        that sees the deployment (they reconnect; their tunnels stay up)."""
        control = self._control
        log.error("lost the shared state for longer than its expiry: closing %d client sessions",
                  len(control.sessions))
        for session_id in self._held:
            control._deliver(control.matcher.drop_session(session_id))
        self._ids.clear()
        self._held.clear()
        for key, entry in list(control.relays.items()):
            if entry.instance is not None:
                del control.relays[key]
        for session in list(control.sessions.values()):
            session.conn.close(CloseCode.UNAVAILABLE, "unavailable")


class Published:
    """This instance's announcements in the shared state, in step with endpoint expiry: a
    vanished session's announcements stay published while they linger in the Matcher and
    are withdrawn when it drops them (``released``), not at the disconnect. A session that
    takes a lingering announcement over (the client came back) publishes under the old
    one's shared key, so the other instances see the same announcement again, not a new
    peer and a withdrawal."""

    def __init__(self, shared: SharedState, others: OtherInstances) -> None:
        self._shared = shared
        self._others = others
        self._keys: dict[tuple[int, str, Role], int] = {}  # (session, name, role) -> shared session

    def announce(self, ann: Announcement) -> None:
        shared_session = self._keys.get((ann.session, ann.name, ann.role), ann.session)
        self._shared.announce(SharedAnnouncement(self._shared.instance, shared_session, ann.name, ann.role.value,
                                                 ann.route, ann.certificate, ann.addresses, ann.nat))

    def withdraw(self, session: int, name: str, role: Role) -> None:
        self._shared.withdraw(self._keys.pop((session, name, role), session), name, role.value)

    def drop_session(self, session: int, lingers: bool) -> None:
        """A local session ended; while its announcements linger they stay published."""
        if lingers:
            return
        for key in [k for k in self._keys if k[0] == session]:
            self.withdraw(*key)
        self._shared.drop_session(session)

    def released(self, released: list[tuple[int, Key, int | None]]) -> None:
        """The Matcher's ``take_released()``: lingering announcements that expired or were taken over."""
        for session, (name, role), successor in released:
            if self._others.remote(session):
                continue  # its own instance withdraws it
            shared_session = self._keys.pop((session, name, role), session)
            if successor is None or self._others.remote(successor):
                self._shared.withdraw(shared_session, name, role.value)
            else:
                self._keys[(successor, name, role)] = shared_session

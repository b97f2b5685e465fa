"""What control learns from the other instances of its deployment (docs/scaling.md): their
announcements go into this instance's Matcher under ids of their own, their relays into its
relay list (with grant keys from the shared grant secret)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connet_core.model import Role, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.matching import Announcement
from connet_core.shared_state import Change, RelayGone, SharedAnnouncement, SharedRelay, Stale, Withdrawn
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
                session_id, change.name, Role(change.role), change.route, change.certificate, change.addresses)))
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
                                                 control.grant_key_for(change.certificate), instance=change.instance)
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

"""A stateful property test (hypothesis RuleBasedStateMachine) of the control server's session:
clients open sessions, authenticate (with good and bad tokens), announce and withdraw, send
messages out of order, malformed frames or bad announcements, hang up and come back, in any
interleaving, against a real :class:`connet_core.control.Control` over the in-memory transport
(the session logic is asyncio glue, not sans-I/O, so it is driven through its connections).

The reference model says, for every step:
- a session before Authenticate accepts nothing else: any other message, or a malformed frame,
  closes the connection with ``protocol-error``; a token nobody knows with ``auth-failed``;
- a live session is answered ``Authenticated``; an Authenticate again, a malformed frame or an
  announcement with a bad role closes it with ``protocol-error`` (docs/protocol.md: "a message
  the state of the stream does not expect ... closes ... with protocol-error"), and its
  announcements are gone for everyone;
- what each live client was last told about each name it holds (``PeersUpdate``) equals the
  set of the other side's announcements in the model, and it got the relays (none here) for it.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from connet_core.certs import write_test_certificates
from connet_core.config import CommonSettings, ControlSettings
from connet_core.control import Control
from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.model import HostPort, Role
from connet_core.plugins import load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    Announce,
    Authenticate,
    Authenticated,
    PeersUpdate,
    RelaysUpdate,
    Withdraw,
)
from connet_core.protocol.streams import MessageStream
from connet_core.testing import MemoryNetwork, memory_transport_plugin
from connet_core.transport import Trust

CLIENTS = st.integers(0, 2)
NAMES = st.just("web")  # one name: every announcement meets the others
ROLES = st.sampled_from([Role.DESTINATION, Role.SOURCE])
ROUTES = st.sampled_from(["any", "direct", "relay"])
TOKENS = ("tok-0", "tok-1", "tok-2")
WAIT = 5.0  # seconds any one expected event may take (the memory network answers in ms)

_CERTS: dict[str, Path] = {}


def certs() -> dict[str, Path]:
    """One control certificate for the whole run (made once: RSA/EC keys are slow)."""
    if not _CERTS:
        _CERTS.update(write_test_certificates(Path(tempfile.mkdtemp(prefix="connet-session-")),
                                              ["localhost", "127.0.0.1"]))
    return _CERTS


# a frame whose payload is not msgpack at all: a length header, then garbage
MALFORMED = (3).to_bytes(4, "big") + b"\xc1\xc1\xc1"


@dataclass(eq=False)
class Session:
    """The client's end of one control session, and what it has heard."""

    conn: object
    messages: MessageStream
    live: bool = False
    heard: list = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None

    async def read(self) -> None:
        try:
            while True:
                message = await self.messages.recv_or_finished()
                if message is None:
                    return
                self.heard.append(message)
                self.changed.set()
        except (ConnectionLost, StreamReset, ProtocolError):
            return  # closed: the close code is what the rules check


class ControlSessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.network = MemoryNetwork(default_rtt=0.0)
        self.store = tempfile.TemporaryDirectory(prefix="connet-session-store-")
        common = CommonSettings(transport="memory")
        control_settings = ControlSettings(
            cert_file=certs()["cert"], key_file=certs()["key"],
            addr=HostPort("127.0.0.1", 0), store_dir=Path(self.store.name), common=common,
            endpoint_expiry=0.0)  # a session's announcements end with it (expiry has its own tests)
        hooks = load_hooks(extra_plugins=[memory_transport_plugin(self.network)],
                           plugin_settings={"tokens": {"tokens": TOKENS}})  # connet server's [server] tokens
        self.control = Control(control_settings, hooks)
        self.transport = self.network.transport("memory")
        self.endpoints: dict[int, object] = {}
        self.sessions: dict[int, Session] = {}
        # the reference model: (name, role) -> {client: route}, for live sessions only
        self.model: dict[tuple[str, Role], dict[int, str]] = {}
        self.control_task = self.loop.create_task(self.control.run())
        self.run(asyncio.wait_for(self.control.started.wait(), WAIT))

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        async def stop() -> None:
            for session in self.sessions.values():
                session.conn.close(CloseCode.OK)
                if session.reader is not None:
                    session.reader.cancel()
            for endpoint in self.endpoints.values():
                await endpoint.close()
            self.control_task.cancel()
            await asyncio.gather(self.control_task, return_exceptions=True)

        try:
            self.run(stop())
        finally:
            self.loop.close()
            self.store.cleanup()

    # --- the client's side ------------------------------------------------------------------

    @staticmethod
    def certificate(client: int) -> bytes:
        return b"certificate of client %d" % client

    def _forget(self, client: int) -> None:
        """The model's side of a session ending: its announcements are gone."""
        self.sessions.pop(client, None)
        for holders in self.model.values():
            holders.pop(client, None)

    async def _closed_with(self, client: int, code: CloseCode) -> None:
        session = self.sessions[client]
        info = await asyncio.wait_for(session.conn.wait_closed(), WAIT)
        assert info.code == code, f"client {client}: closed with {CloseCode.describe(info.code)}, expected {code.name}"
        self._forget(client)

    async def _send_raw(self, client: int, data: bytes) -> None:
        await self.sessions[client].messages.stream.write(data)

    @rule(client=CLIENTS)
    def open_session(self, client: int) -> None:
        if client in self.sessions:
            return

        async def open_() -> None:
            endpoint = self.endpoints.get(client)
            if endpoint is None:
                endpoint = self.endpoints[client] = await self.transport.bind(
                    HostPort("127.0.0.1", 0), identity=None, alpns=())
            conn = await endpoint.dial(self.control.endpoint.local_address, alpn=ALPN_CONTROL,
                                       trust=Trust(server_name="127.0.0.1", cafile=certs()["ca"]))
            self.sessions[client] = Session(conn, MessageStream(await conn.open_stream()))

        self.run(open_())

    @rule(client=CLIENTS)
    def connect(self, client: int) -> None:
        """A (re)connect as a client does it: open a session and authenticate at once."""
        if client not in self.sessions:
            self.open_session(client)
            self.authenticate(client, True)

    @rule(client=CLIENTS, known=st.booleans())
    def authenticate(self, client: int, known: bool) -> None:
        session = self.sessions.get(client)
        if session is None:
            return

        async def authenticate_() -> None:
            token = TOKENS[client] if known else f"unknown-{client}"
            await session.messages.send(Authenticate(token=token))
            if session.live:  # a second Authenticate is out of order
                await self._closed_with(client, CloseCode.PROTOCOL_ERROR)
            elif not known:
                await self._closed_with(client, CloseCode.AUTH_FAILED)
            else:
                hello = await session.messages.recv(Authenticated, timeout=WAIT)
                assert hello.observed_addr == str(self.endpoints[client].local_address)
                session.live = True
                session.reader = self.loop.create_task(session.read())

        self.run(authenticate_())

    @rule(client=CLIENTS, name=NAMES, role=ROLES, route=ROUTES)
    def announce(self, client: int, name: str, role: Role, route: str) -> None:
        session = self.sessions.get(client)
        if session is None:
            return

        async def announce_() -> None:
            await session.messages.send(Announce(name, role.value, route, self.certificate(client)))
            if not session.live:  # before Authenticate: nothing else is accepted
                await self._closed_with(client, CloseCode.PROTOCOL_ERROR)
            else:
                self.model.setdefault((name, role), {})[client] = route

        self.run(announce_())

    @rule(client=CLIENTS, name=NAMES, role=ROLES)
    def withdraw(self, client: int, name: str, role: Role) -> None:
        session = self.sessions.get(client)
        if session is None:
            return

        async def withdraw_() -> None:
            await session.messages.send(Withdraw(name, role.value))
            if not session.live:
                await self._closed_with(client, CloseCode.PROTOCOL_ERROR)
            else:
                self.model.get((name, role), {}).pop(client, None)

        self.run(withdraw_())

    @rule(client=CLIENTS, bad_role=st.sampled_from(["", "both", "Destination"]))
    def announce_a_bad_role(self, client: int, bad_role: str) -> None:
        if client not in self.sessions:
            return

        async def bad() -> None:
            await self.sessions[client].messages.send(Announce("web", bad_role, "any", self.certificate(client)))
            await self._closed_with(client, CloseCode.PROTOCOL_ERROR)

        self.run(bad())

    @rule(client=CLIENTS)
    def send_a_malformed_frame(self, client: int) -> None:
        if client not in self.sessions:
            return

        async def malformed() -> None:
            await self._send_raw(client, MALFORMED)
            await self._closed_with(client, CloseCode.PROTOCOL_ERROR)

        self.run(malformed())

    @rule(client=CLIENTS)
    def hang_up(self, client: int) -> None:
        session = self.sessions.get(client)
        if session is None:
            return
        session.conn.close(CloseCode.OK, "bye")
        if session.reader is not None:
            session.reader.cancel()
        self._forget(client)

    # --- what every live client was told ------------------------------------------------------

    def _expected(self, client: int) -> dict[tuple[str, str], frozenset]:
        """For each (name, role) the client holds: the other side's (certificate, route)."""
        out = {}
        for (name, role), holders in self.model.items():
            if client in holders:
                others = self.model.get((name, role.opposite()), {})
                out[(name, role.value)] = frozenset((self.certificate(c), route) for c, route in others.items())
        return out

    def _told(self, session: Session) -> tuple[dict[tuple[str, str], frozenset], set[tuple[str, str]]]:
        peers: dict[tuple[str, str], frozenset] = {}
        relays: set[tuple[str, str]] = set()
        for message in session.heard:
            if isinstance(message, PeersUpdate):
                peers[(message.name, message.role)] = frozenset((p.certificate, p.route) for p in message.peers)
            elif isinstance(message, RelaysUpdate):
                assert message.relays == ()  # no relay is registered here
                relays.add((message.name, message.role))
        return peers, relays

    @invariant()
    def every_client_is_told_what_the_model_says(self) -> None:
        async def converge() -> None:
            for client, session in self.sessions.items():
                if not session.live:
                    continue
                expected = self._expected(client)
                try:
                    async with asyncio.timeout(WAIT):
                        while True:
                            peers, relays = self._told(session)
                            told = {key: peers.get(key, frozenset()) for key in expected}
                            if told == expected and set(expected) <= relays:
                                break
                            session.changed.clear()
                            await session.changed.wait()
                except TimeoutError:
                    raise AssertionError(f"client {client} was told {told}, relays for {relays}; "
                                         f"the model says {expected}") from None

        self.run(converge())

    @invariant()
    def control_holds_exactly_the_live_sessions(self) -> None:
        """Every refusal and hang-up has been cleaned up on the server (it may lag a hang-up
        by a turn of the loop, so this waits for it, bounded)."""
        async def settle() -> None:
            live = sum(1 for s in self.sessions.values() if s.live)
            async with asyncio.timeout(WAIT):
                while len(self.control.sessions) != live:
                    await asyncio.sleep(0)  # yield the loop until control's tasks have run

        self.run(settle())


ControlSessionMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_control_session = ControlSessionMachine.TestCase

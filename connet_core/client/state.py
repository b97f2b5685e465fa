"""What the parts of a client share: who it is, whom control matched it with, the peers and
relays that reach them, the counters status reports, and the condition that wakes whoever
waits for a path.

Plain records. Each table has one part that changes it (named below); the others read it.
Whoever changes something a waiting stream could use says so with ``notify_paths``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

from cryptography.hazmat.primitives.asymmetric import ec

from connet_core.certs import make_identity
from connet_core.config import ClientSettings
from connet_core.errors import ProtocolError
from connet_core.forward import Counters
from connet_core.model import HostPort, Role, RoutePolicy, certificate_hash
from connet_core.portmap.mapper import MappedAddress
from connet_core.protocol.identity import Refused
from connet_core.protocol.identity_io import prove
from connet_core.protocol.messages import PeerInfo
from connet_core.protocol.streams import MessageStream
from connet_core.tls_stream import PinnedContexts
from connet_core.transport import Connection, TLSIdentity

Key = tuple[str, Role]  # (name, this client's role for it)

HANDSHAKE_STEP_TIMEOUT = 5.0  # each message of a handshake: identity proof, grants, stream request
PEER_DIAL_TIMEOUT = 5.0  # one QUIC dial to a peer or a relay
UNKNOWN_PEER_GRACE = 3.0  # a peer may dial (or open a stream) before control told us about it


def role_of(text: str) -> Role:
    """A role in a message from control: a bad one is control's protocol error, not our bug."""
    try:
        return Role(text)
    except ValueError:
        raise ProtocolError(f"control sent an unknown role {text[:20]!r}") from None


def local_route(settings: ClientSettings, name: str, role: Role) -> RoutePolicy:
    """The route this client configured for its endpoint ``name`` in ``role``."""
    for e in settings.sources if role is Role.SOURCE else settings.destinations:
        if e.name == name:
            return e.route
    return RoutePolicy.ANY


@dataclass(frozen=True, eq=False)
class LocalIdentity:
    """This run's certificate and key: peers and relays pin the one, proofs use the other."""

    tls: TLSIdentity
    certificate: bytes  # DER
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> "LocalIdentity":
        return cls(*make_identity("connet-client"))

    @cached_property
    def hash(self) -> bytes:
        return certificate_hash(self.certificate)


async def prove_over(conn: Connection, identity: LocalIdentity, alpn: str, grants: tuple[bytes, ...] = ()) -> None:
    """The dialer's half of the identity proof on ``conn``'s first stream (the listener, a
    peer or a relay, was pinned by TLS): the shared machine of connet_core.protocol.identity.
    Raises ProtocolError with the listener's code if it refuses or goes quiet."""
    outcome = await prove(MessageStream(await conn.open_stream()), certificate=identity.certificate,
                          key=identity.key, listener_hash=certificate_hash(conn.peer_certificate or b""),
                          alpn=alpn, grants=grants, step_timeout=HANDSHAKE_STEP_TIMEOUT)
    if isinstance(outcome, Refused):
        raise ProtocolError(outcome.reason, outcome.code)


@dataclass(eq=False)
class PeerConnection:
    conn: Connection
    dialer_hash: bytes  # whose dial this connection is: the deterministic rule keeps the lower
    since: float = field(default_factory=time.monotonic)
    active_streams: int = 0
    draining: bool = False


@dataclass(eq=False)
class Peer:
    """Another client this one is matched with, under one or more names."""

    certificate: bytes
    hash: bytes
    matched: dict[Key, PeerInfo] = field(default_factory=dict)
    connections: list[PeerConnection] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    dialer: asyncio.Task | None = None
    unmatched_since: float | None = None  # control stopped listing it (for every name)

    @property
    def label(self) -> str:
        return self.hash.hex()[:12]

    def busy(self) -> bool:
        return any(pc.active_streams for pc in self.connections)

    def addresses(self) -> list[HostPort]:
        seen: list[HostPort] = []
        for info in self.matched.values():
            for text in info.addresses:
                try:
                    addr = HostPort.parse(text)
                except ValueError:
                    continue
                if addr not in seen:
                    seen.append(addr)
        return seen

    def active(self) -> PeerConnection | None:
        live = [pc for pc in self.connections if not pc.draining and not pc.conn.closed]
        return live[0] if live else None


@dataclass(eq=False)
class RelayLink:
    """One relay this client may use, with the grants control gave for it, per name."""

    addr: HostPort
    certificate: bytes
    grants: dict[Key, bytes] = field(default_factory=dict)
    conn: Connection | None = None
    presented: set[bytes] = field(default_factory=set)  # grants the relay has seen on conn
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    active_streams: int = 0
    tcp_addr: HostPort | None = None  # where the relay also takes QUIC over TCP (UDP blocked)

    @property
    def label(self) -> str:
        return str(self.addr)

    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed


class ClientState:
    """The tables the parts of one client share."""

    def __init__(self, settings: ClientSettings) -> None:
        self.identity = LocalIdentity.generate()
        # one QUIC handshake with a peer or a relay (handshake-idle-timeout)
        self.dial_timeout = settings.handshake_idle_timeout or PEER_DIAL_TIMEOUT
        self.metadata = settings.metadata
        # control link: the session and what control refused
        self.control_connected = False
        self.observed: HostPort | None = None
        self.control_carrier: str | None = None  # "udp" or "tcp" (connet_core.client.carrier)
        self.refused: dict[Key, str] = {}
        # port mapping: the router's mapping of the direct socket (connet_core.portmap), and
        # the signal that the candidates sent to control changed (the control link re-announces)
        self.port_mapping: MappedAddress | None = None
        self.candidates_changed = asyncio.Event()
        # peers: whom control matched, under which name, and the peers' connections
        self.matches: dict[Key, dict[bytes, PeerInfo]] = {}
        self.peers: dict[bytes, Peer] = {}
        self.handshake_failures = 0  # peer dials and proofs that failed
        # relays: by certificate hash, and which relays control offered for each name
        self.relays: dict[bytes, RelayLink] = {}
        self.relays_for: dict[Key, set[bytes]] = {}
        # sources and destinations: their tunnels
        self.source_addresses: dict[str, HostPort] = {}
        self.counters: dict[Key, Counters] = {
            (e.name, e.role): Counters() for e in (*settings.destinations, *settings.sources)
        }
        self.refused_connections: dict[Key, int] = {key: 0 for key in self.counters}
        # end-to-end TLS of relayed streams, one context per side and peer; the peers part
        # forgets a peer's when the peer is gone (every restart of a peer is a new certificate)
        self.tls = PinnedContexts(self.identity.tls)
        # notified whenever a path, a peer or a match appeared or changed
        self.paths_changed = asyncio.Condition()

    async def notify_paths(self) -> None:
        async with self.paths_changed:
            self.paths_changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether ``predicate`` held within ``timeout``, looking again at every change."""
        async with self.paths_changed:
            try:
                await asyncio.wait_for(self.paths_changed.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True

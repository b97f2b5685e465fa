"""Every message of the four connet protocols, as frozen dataclasses.

On the wire each is a msgpack map ``{"t": TYPE, field: value, ...}`` (see codec.py and
docs/protocol.md). Field types are limited to str, int, bool, bytes and tuples of those or
of nested message-like records, so the codec can check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ALPNs: the protocol version lives here.
ALPN_CONTROL = "connet-control/1"  # client -> control
ALPN_RELAYS = "connet-relays/1"  # relay -> control
ALPN_RELAY = "connet-relay/1"  # client -> relay
ALPN_PEER = "connet-peer/1"  # client <-> client

# The longest token (UTF-8 bytes) a client or relay may use: it travels in one Authenticate
# or RelayRegister frame of at most 64 KiB, and this leaves 4 KiB for the other fields (a
# relay's certificate in RelayRegister is about 500 bytes). Configuration refuses longer.
MAX_TOKEN_BYTES = 60 * 1024

# A client's or relay's metadata: a label for status and the dashboard, not a payload.
MAX_METADATA_LENGTH = 128


def metadata_problem(text: str) -> str | None:
    """Why ``text`` is not acceptable metadata, or None. Configuration and control both ask."""
    if len(text) > MAX_METADATA_LENGTH:
        return f"is {len(text)} characters long; at most {MAX_METADATA_LENGTH}"
    if not text.isprintable():
        return "must be printable text on one line (no control characters)"
    return None


# --- nested records (not messages on their own) ------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer client as control tells it: its certificate and where it may be dialed."""

    certificate: bytes  # DER; its sha256 is the peer's identity
    addresses: tuple[str, ...] = ()  # host:port candidates for a direct dial
    route: str = "any"
    nat: str = ""  # what the peer says of its NAT: "easy", "hard" or "" (unknown); see Announce


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """A relay a client may use for one name and role, with the grant to present to it."""

    addr: str  # host:port
    certificate: bytes  # DER, pinned by the client
    grant: bytes
    # host:port where the relay also takes QUIC over TLS-over-TCP (clients whose UDP is
    # blocked); "" when it does not. Added after 1.0: older peers ignore it, older relays omit it.
    tcp_addr: str = ""


# --- control protocol (connet-control/1), on the session stream --------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    token: str
    reconnect_id: bytes = b""  # from a previous session, so control can replace it at once
    client_version: str = ""
    metadata: str = ""  # the client's label (metadata_problem says what is accepted)


@dataclass(frozen=True, slots=True)
class Authenticated:
    observed_addr: str  # the client's address as the server saw it (host:port)
    reconnect_id: bytes


@dataclass(frozen=True, slots=True)
class Announce:
    """Add or update a destination/source; sent again when addresses change."""

    name: str
    role: str  # "destination" | "source"
    route: str  # "any" | "direct" | "relay"
    certificate: bytes
    addresses: tuple[str, ...] = ()
    # "hard": the NAT gave control another port than the socket's (endpoint-dependent
    # mapping, most likely), "easy": the same port or a router mapping, "": unknown. Peers
    # with one hard and one easy side try birthday probing (connet_core/client/birthday_probe.py).
    nat: str = ""


@dataclass(frozen=True, slots=True)
class Withdraw:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class AnnounceRefused:
    name: str
    role: str
    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PeersUpdate:
    """The full current set of peers of the opposite role for (name, role)."""

    name: str
    role: str
    peers: tuple[PeerInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class RelaysUpdate:
    """The full current set of relays for (name, role)."""

    name: str
    role: str
    relays: tuple[RelayInfo, ...] = ()


# --- relay registration (connet-relays/1) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayRegister:
    token: str
    hostname: str
    port: int
    certificate: bytes
    metadata: str = ""  # the relay's label, as for Authenticate
    tcp_port: int = 0  # the relay's TLS-over-TCP port (at hostname); 0: none


@dataclass(frozen=True, slots=True)
class RelayRegistered:
    grant_key: bytes  # the key control signs grants for this relay with


# --- identity proof (connet-peer/1 and connet-relay/1), on the first stream --------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The dialer names its certificate (and, to a relay, its grants)."""

    certificate: bytes
    # a grant per (name, role) the dialer uses this relay for; a 64 KiB frame holds fewer.
    # Bounded so a Hello, read before the dialer has proven its key, decodes cheaply (codec.py)
    grants: tuple[bytes, ...] = field(default=(), metadata={"max_items": 1024})


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Proof:
    signature: bytes  # over (nonce, sha256 of the listener's certificate, ALPN)


@dataclass(frozen=True, slots=True)
class Welcome:
    pass


# --- data streams (connet-peer/1 and connet-relay/1) -------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Opens a tunneled connection to destination ``name``; raw bytes follow the reply."""

    name: str
    peer: bytes = b""  # via a relay: sha256 of the destination's certificate (b"": any)
    # host:port of the TCP client at the source, and where it connected there, for the
    # destination's PROXY protocol header ("": unknown, as from a source before these fields)
    client_addr: str = ""
    client_dest: str = ""


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    code: int
    reason: str = ""


# The registry: wire tag -> class. Tags are stable; never reuse one.
MESSAGE_TYPES: dict[str, type] = {
    "auth": Authenticate,
    "authok": Authenticated,
    "announce": Announce,
    "withdraw": Withdraw,
    "refused": AnnounceRefused,
    "peers": PeersUpdate,
    "relays": RelaysUpdate,
    "relayreg": RelayRegister,
    "relayok": RelayRegistered,
    "hello": Hello,
    "challenge": Challenge,
    "proof": Proof,
    "welcome": Welcome,
    "connect": Connect,
    "connected": Connected,
    "connrefused": ConnectRefused,
}
NESTED_TYPES: dict[str, type] = {"peer": PeerInfo, "relay": RelayInfo}

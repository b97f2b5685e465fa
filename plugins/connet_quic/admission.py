"""Who may start a QUIC handshake, decided before the QUIC library sees the packet (sans-I/O).

A client Initial that routes to no connection would make the library build a connection:
~90 KiB of state and a millisecond or more of CPU (key derivation, the TLS ClientHello,
the certificate signature), all for a sender whose address nobody has checked. Under a
flood of them the event loop falls behind its socket: an established connection's
datagrams wait in the receive buffer behind seconds of handshake work, its idle timer
fires first, the endpoint forgets it, and the peer's next datagram is answered with a
stateless reset (docs/security.md, "Why an established relayed client was reset").

So every such Initial goes through :class:`Admission` first, which costs a dict lookup
and a token bucket:

- **accepted**: the library gets it. Without address validation only while the
  endpoint is not under load: the sender's host is within its budget of new handshakes
  (``HOST_RATE``/``HOST_BURST``), all hosts together within theirs
  (``GLOBAL_RATE``/``GLOBAL_BURST``), and fewer than ``UNVALIDATED_PENDING`` unvalidated
  handshakes are pending.
- **retry**: otherwise the endpoint answers with a QUIC Retry (RFC 9000 8.1.2): a
  stateless packet carrying a token that binds the client's address and port, its
  original destination connection ID and the Retry's connection ID, MAC'd with a key of
  this process, valid ``TOKEN_LIFETIME`` seconds. A real client repeats its Initial with
  the token, which proves it receives at its address; a spoofed or pre-recorded flood
  never does and costs us one small packet each (smaller than its trigger: no
  amplification). Retries themselves are bounded (``RETRY_RATE``).
- **dropped**, with a cause: a token we did not issue or that expired (``bad_token``),
  a validated client over the pending caps (``pending_full``: its Initial is
  retransmitted and gets in once a slot frees) or over its host's or everyone's budget of
  validated handshakes (``host_rate``, ``validated_rate``), a Retry over its budget
  (``retry_rate``).

A "host" is an IPv4 address, or an IPv6 /64: one subscriber gets a whole /64, so budgets
per /128 would give an attacker 2**64 of them.

Validated handshakes have their own pending caps, so unvalidated ones (which are all a
spoofed flood can create) never take the slots of clients that answered a Retry.

What is refused is counted and logged by :mod:`connet_quic.refusals`.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
import ipaddress
import os
import struct
from dataclasses import dataclass
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connet_quic._reset import TokenBucket

Address = tuple[str, int]

# Unvalidated handshakes (no Retry token) the endpoint starts without asking for one.
GLOBAL_RATE = 50.0  # per second, all hosts together
GLOBAL_BURST = 100
HOST_RATE = 10.0  # per second, per source IP
HOST_BURST = 20
UNVALIDATED_PENDING = 64  # pending at once; above, everyone gets a Retry
# Handshakes with a valid Retry token: pending at once, per host, per host:port, and
# started per second per host (many clients behind one NAT address reconnect at once)
VALIDATED_PENDING = 256
VALIDATED_PENDING_PER_HOST = 64
VALIDATED_PENDING_PER_SOCKET = 8
VALIDATED_HOST_RATE = 100.0
VALIDATED_HOST_BURST = 200
# ... and all hosts together: an attacker with a real QUIC stack answers Retries, and a
# handshake that fails is forgotten at once, so the pending caps alone do not bound the rate
VALIDATED_GLOBAL_RATE = 200.0
VALIDATED_GLOBAL_BURST = 400
# Retry packets sent, all hosts together (each is ~70 bytes plus the client's CIDs)
RETRY_RATE = 5000.0
RETRY_BURST = 1000
# hosts whose budgets we remember; the least recently seen beyond this are forgotten (a
# forgotten host starts with a full bucket: the global budget still holds)
MAX_TRACKED_HOSTS = 4096

TOKEN_LIFETIME = 10.0  # seconds a Retry token is accepted (the client uses it at once)
TOKEN_VERSION = 1
_MAC_SIZE = 16

# RFC 9001 5.8 and RFC 9369 3.3.3: the fixed AES-128-GCM key and nonce of the Retry
# integrity tag, and the long-header type bits of a Retry, per QUIC version
QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
_RETRY_AEAD = {
    QUIC_V1: (bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"), bytes.fromhex("461599d35d632bf2239825bb")),
    QUIC_V2: (bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"), bytes.fromhex("d86969bc2d7c6d9990efb04a")),
}
_RETRY_TYPE_BITS = {QUIC_V1: 0b11, QUIC_V2: 0b00}


def retry_packet(version: int, destination_cid: bytes, source_cid: bytes, original_destination_cid: bytes,
                 token: bytes) -> bytes | None:
    """A Retry packet (RFC 9000 17.2.5) with its integrity tag, or None for a version we
    cannot retry. ``destination_cid`` is the client's source CID, ``source_cid`` the new
    CID the client must send its next Initial to."""
    aead = _RETRY_AEAD.get(version)
    if aead is None:
        return None
    first = 0xC0 | (_RETRY_TYPE_BITS[version] << 4)  # the four low bits are unused: zero
    packet = (bytes([first]) + struct.pack("!I", version) + bytes([len(destination_cid)]) + destination_cid
              + bytes([len(source_cid)]) + source_cid + token)
    key, nonce = aead
    pseudo = bytes([len(original_destination_cid)]) + original_destination_cid + packet
    return packet + AESGCM(key).encrypt(nonce, b"", pseudo)


class RetryTokens:
    """Stateless Retry tokens: ``version | issued (ms) | len | original DCID | retry SCID | MAC``,
    the MAC over all of it and the client's address and port."""

    def __init__(self, key: bytes | None = None, lifetime: float = TOKEN_LIFETIME) -> None:
        self._key = key if key is not None else os.urandom(32)
        self._lifetime = lifetime

    def _mac(self, addr: Address, body: bytes) -> bytes:
        where = f"{addr[0]}|{addr[1]}|".encode()
        return hmac.new(self._key, where + body, hashlib.sha256).digest()[:_MAC_SIZE]

    def issue(self, addr: Address, original_dcid: bytes, retry_scid: bytes, now: float) -> bytes:
        body = (bytes([TOKEN_VERSION]) + struct.pack("!Q", max(0, int(now * 1000)))
                + bytes([len(original_dcid)]) + original_dcid + retry_scid)
        return body + self._mac(addr, body)

    def validate(self, addr: Address, token: bytes, destination_cid: bytes, now: float) -> bytes | None:
        """The original destination CID if ``token`` is one we issued to ``addr``, for the
        connection ID the client now sends to, and not expired; else None."""
        if len(token) < 1 + 8 + 1 + _MAC_SIZE or token[0] != TOKEN_VERSION:
            return None
        body, mac = token[:-_MAC_SIZE], token[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(addr, body)):
            return None
        (issued_ms,) = struct.unpack("!Q", body[1:9])
        age = now - issued_ms / 1000
        if age < -1.0 or age > self._lifetime:
            return None
        length = body[9]
        original_dcid, retry_scid = body[10:10 + length], body[10 + length:]
        if len(original_dcid) != length or retry_scid != destination_cid:
            return None
        return original_dcid


class Verdict(enum.Enum):
    ACCEPT = "accept"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    cause: str = ""  # why a Retry or a drop (a counter and log cause)
    original_dcid: bytes = b""  # ACCEPT: the transport parameter original_destination_connection_id
    retry_scid: bytes | None = None  # ACCEPT after a Retry: retry_source_connection_id
    ticket: "Ticket | None" = None  # ACCEPT: give it back with Admission.finished


@dataclass(frozen=True)
class Ticket:
    """One pending handshake's share of the caps."""

    addr: Address
    validated: bool


def host_key(ip: str) -> str:
    """What the per-host budgets count by: the IPv4 address, or the IPv6 address's /64."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network((ip.split("%", 1)[0], 64), strict=False))
    except ValueError:
        return ip  # not an address we can parse: counted by itself


class _Buckets:
    """Token buckets per host, the least recently used forgotten beyond a bound."""

    def __init__(self, rate: float, burst: int, bound: int) -> None:
        self._rate, self._burst, self._bound = rate, burst, bound
        self._by_host: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def take(self, host: str, now: float) -> bool:
        bucket = self._by_host.get(host)
        if bucket is None:
            bucket = self._by_host[host] = TokenBucket(self._rate, self._burst)
            if len(self._by_host) > self._bound:
                self._by_host.popitem(last=False)
        else:
            self._by_host.move_to_end(host)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._by_host)


class Admission:
    """The decision for each client Initial that routes to no connection; see the module docstring."""

    def __init__(self, tokens: RetryTokens | None = None) -> None:
        self.tokens = tokens if tokens is not None else RetryTokens()
        self._global = TokenBucket(GLOBAL_RATE, GLOBAL_BURST)
        self._hosts = _Buckets(HOST_RATE, HOST_BURST, MAX_TRACKED_HOSTS)
        self._validated_hosts = _Buckets(VALIDATED_HOST_RATE, VALIDATED_HOST_BURST, MAX_TRACKED_HOSTS)
        self._validated_global = TokenBucket(VALIDATED_GLOBAL_RATE, VALIDATED_GLOBAL_BURST)
        self._retries = TokenBucket(RETRY_RATE, RETRY_BURST)
        self.always_retry = False  # validate every address (a test hook, and a knob for embedders)
        self.pending_unvalidated = 0
        self.pending_validated = 0
        self._pending_by_source: dict[str | Address, int] = {}  # validated: by host and by host:port

    def initial(self, addr: Address, destination_cid: bytes, token: bytes, now: float) -> Decision:
        if token:
            return self._with_token(addr, destination_cid, token, now)
        if self.always_retry:
            return self._retry("always", now)
        if self.pending_unvalidated >= UNVALIDATED_PENDING:
            return self._retry("pending", now)
        if not self._hosts.take(host_key(addr[0]), now):
            return self._retry("host_rate", now)
        if not self._global.take(now):
            return self._retry("global_rate", now)
        ticket = Ticket(addr, validated=False)
        self.pending_unvalidated += 1
        return Decision(Verdict.ACCEPT, original_dcid=destination_cid, ticket=ticket)

    def _retry(self, cause: str, now: float) -> Decision:
        if not self._retries.take(now):
            return Decision(Verdict.DROP, "retry_rate")
        return Decision(Verdict.RETRY, cause)

    def _with_token(self, addr: Address, destination_cid: bytes, token: bytes, now: float) -> Decision:
        original_dcid = self.tokens.validate(addr, token, destination_cid, now)
        if original_dcid is None:
            # not ours (another server's NEW_TOKEN, a forgery) or expired: RFC 9000 8.1.3
            # allows dropping it; the client's retransmission will not carry a better one,
            # but a real client that lost our Retry times out and dials again
            return Decision(Verdict.DROP, "bad_token")
        if (self.pending_validated >= VALIDATED_PENDING
                or self._pending_by_source.get(addr[0], 0) >= VALIDATED_PENDING_PER_HOST
                or self._pending_by_source.get(addr, 0) >= VALIDATED_PENDING_PER_SOCKET):
            return Decision(Verdict.DROP, "pending_full")
        if not self._validated_hosts.take(host_key(addr[0]), now):
            return Decision(Verdict.DROP, "host_rate")
        if not self._validated_global.take(now):
            return Decision(Verdict.DROP, "validated_rate")
        self.pending_validated += 1
        for source in (addr[0], addr):
            self._pending_by_source[source] = self._pending_by_source.get(source, 0) + 1
        return Decision(Verdict.ACCEPT, original_dcid=original_dcid, retry_scid=destination_cid,
                        ticket=Ticket(addr, validated=True))

    def finished(self, ticket: Ticket) -> None:
        """A pending handshake completed, failed or timed out: its slot is free."""
        if not ticket.validated:
            self.pending_unvalidated -= 1
            return
        self.pending_validated -= 1
        for source in (ticket.addr[0], ticket.addr):
            left = self._pending_by_source.get(source, 1) - 1
            if left > 0:
                self._pending_by_source[source] = left
            else:
                self._pending_by_source.pop(source, None)


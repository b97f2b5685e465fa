"""Stateless reset (RFC 9000 10.3), independent of the QUIC library.

An endpoint that lost a connection's state (it restarted) cannot decrypt that connection's
packets any more; it can still end the connection at once by answering with a *stateless
reset*: a datagram that looks like a short-header packet and ends in a 16-byte token the
peer learned earlier (the server's ``stateless_reset_token`` transport parameter, or a
NEW_CONNECTION_ID frame). For the restarted endpoint to know the token of a connection it
forgot, tokens are not random but derived: ``HMAC-SHA256(key, connection ID)[:16]``, with
the key persisted across restarts. A token reveals nothing about the key, and the peer only
ever sees the tokens of connection IDs that were issued to it.

Without the persisted key (``stateless_reset_key`` None) the key is random per endpoint, so
resets still work for late packets of connections this same process forgot (closed ones),
just not across a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os

TOKEN_SIZE = 16
# The RFC's smallest reset: 5 bytes that look like a header (38 unpredictable bits at
# least) + the token. Anything shorter cannot be one, so we never compare it.
MIN_RESET_SIZE = 5 + TOKEN_SIZE  # 21
# We answer only datagrams of at least this size (RFC 9000 10.3: never amplify), so a reset can be one byte
# shorter than its trigger and still be long enough to pass as a short-header packet.
MIN_TRIGGER_SIZE = 41

# The stateless answers an endpoint sends to traffic of no connection, per endpoint (token
# buckets). Half-open accepted handshakes (each costs ~90 KiB of aioquic state) are capped and
# budgeted per source by connet_quic.admission instead, which asks for a Retry under load.
# Stateless resets are never larger than their trigger, so this bounds only the work an
# unknown-CID flood costs us. Generous enough that a restarted server resets a thousand
# clients within seconds (each keepalive is a new chance).
RESET_RATE = 200.0  # per second
RESET_BURST = 50
# Version Negotiation packets (answers to >= 1200-byte datagrams of other versions)
VERSION_NEGOTIATION_RATE = 100.0  # per second
VERSION_NEGOTIATION_BURST = 50
# A reset never needs to be long; cap it so a flood of large datagrams costs us little.
MAX_RESET_SIZE = 64


class ResetKey:
    """Derives the reset token of a connection ID."""

    def __init__(self, key: bytes | None) -> None:
        # a random key when none is persisted: resets then work only within this run
        self._key = key if key is not None else os.urandom(32)

    def token(self, cid: bytes) -> bytes:
        return hmac.new(self._key, cid, hashlib.sha256).digest()[:TOKEN_SIZE]


def stateless_reset(token: bytes, trigger_size: int) -> bytes | None:
    """The reset datagram answering a ``trigger_size``-byte datagram, or None when the
    trigger is too small to answer.

    Always shorter than the trigger: two endpoints that both lost state and answer each
    other's resets then shrink every round and stop at ``MIN_TRIGGER_SIZE`` — no loop and
    no amplification."""
    if trigger_size < MIN_TRIGGER_SIZE:
        return None
    size = min(trigger_size - 1, MAX_RESET_SIZE)
    random_part = bytearray(os.urandom(size - TOKEN_SIZE))
    # first byte 0b01xxxxxx: header form 0 (short), fixed bit 1, the rest random, exactly
    # as a 1-RTT packet whose header protection we cannot tell from random
    random_part[0] = 0x40 | (random_part[0] & 0x3F)
    return bytes(random_part) + token


def reset_token_of(datagram: bytes) -> bytes | None:
    """The token a datagram would carry if it were a stateless reset, else None."""
    if len(datagram) < MIN_RESET_SIZE or datagram[0] & 0x80:
        return None  # too short, or a long header: never a reset
    return datagram[-TOKEN_SIZE:]


class TokenBucket:
    """At most ``rate`` events per second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

"""Birthday probing for one hard NAT (sans-I/O): the probe packets, their authentication,
and the budget both sides keep (docs/security.md).

When one peer is behind an endpoint-dependent NAT ("hard": a new random public port per
destination) and the other is not ("easy"), no single pair of packets can meet. The hard
side sends one probe from each of ``HARD_SOCKETS`` fresh sockets to the easy side's public
address, so its NAT holds that many mappings towards it; the easy side sends probes from its
one socket to random ports of the hard side's public address, opening its own NAT's filter
for each. A probe that lands on one of the hard side's mappings arrives at the socket that
made it, and that path is open both ways. With n mappings among R ports and m probes the
chance of a meeting is ``1 - prod(1 - n / (R - k) for k < m)``: 256 x 256 gives ~64%,
256 x 1024 ~98% (:func:`meeting_probability`).

What is safe about it, by construction here:

* **Authenticated before anything answers.** A probe carries an HMAC under a key only the
  two peers can compute: ECDH of one's identity key with the other's certificate key (the
  keys the identity proof already pins), so control does not hand out a secret and nobody
  on the path can forge one. The hard side acts on (dials from) a socket only after a probe
  verified; the easy side answers nothing at all.
* **Only to the peer, within a budget.** Probes go only to the address control observed for
  the peer (its public IP, and for the hard side's probes the easy side's one port), at
  most ``EASY_PROBES`` packets at ``PROBES_PER_SECOND`` from the easy side and one (plus one
  resend) per hard-side socket, once per ``ATTEMPT_INTERVAL`` per peer, and stop at the first
  success. A probe is 32 bytes and answers nothing, so it amplifies nothing.
* **Not QUIC.** The first byte has QUIC's fixed bit (0x40) clear, so a QUIC stack drops a
  probe as not-QUIC and the endpoint's router can pick probes out with one comparison.

The client's side of it (sockets, pacing, the hand-over to a QUIC dial) is
connet_core/client/birthday_probe.py.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"\x00cBP"  # first byte 0x00: QUIC's fixed bit is clear
VERSION = 1
EASY, HARD = 1, 2  # who sent a probe
HEADER = struct.Struct("!4sBB8sH")  # magic, version, sender role, attempt id, sequence
MAC_SIZE = 16
SIZE = HEADER.size + MAC_SIZE  # 32 bytes

# the budget (docs/security.md)
HARD_SOCKETS = 256
EASY_PROBES = 1024
PROBES_PER_SECOND = 256.0
HARD_RESEND_AFTER = 1.0  # each hard-side socket sends its probe twice at most
ATTEMPT_INTERVAL = 60.0  # per peer
PORTS = range(1024, 65536)  # where a NAT puts mappings (below 1024: reserved, rarely used)


def meeting_probability(mappings: int, probes: int, ports: int = len(PORTS)) -> float:
    """The chance that ``probes`` distinct random ports hit one of ``mappings`` random ports."""
    miss = 0.0
    for k in range(min(probes, ports - mappings + 1)):
        miss += math.log1p(-mappings / (ports - k))
    return 1.0 - math.exp(miss)


def pair_key(own: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey, attempt: bytes) -> bytes:
    """The probes' HMAC key: both peers derive the same one, nobody else can."""
    shared = own.exchange(ec.ECDH(), peer)
    return HKDF(hashes.SHA256(), 32, salt=attempt, info=b"connet birthday probe v1").derive(shared)


def encode(key: bytes, role: int, attempt: bytes, sequence: int) -> bytes:
    header = HEADER.pack(MAGIC, VERSION, role, attempt, sequence)
    return header + hmac.new(key, header, hashlib.sha256).digest()[:MAC_SIZE]


def is_probe(data: bytes) -> bool:
    """Cheap: whether a datagram is meant as a probe (not whether it is genuine)."""
    return len(data) == SIZE and data[:4] == MAGIC


def verify(key: bytes, data: bytes, role: int, attempt: bytes) -> int | None:
    """The sequence number of a genuine probe from ``role`` in ``attempt``, else None."""
    if not is_probe(data):
        return None
    header, mac = data[: HEADER.size], data[HEADER.size :]
    _, version, sender, got_attempt, sequence = HEADER.unpack(header)
    if version != VERSION or sender != role or got_attempt != attempt:
        return None
    if not hmac.compare_digest(mac, hmac.new(key, header, hashlib.sha256).digest()[:MAC_SIZE]):
        return None
    return sequence


@dataclass
class EasyProber:
    """The easy side: probes from its one socket to random ports of the hard side's IP,
    paced, at most ``EASY_PROBES``, until ``stop`` (the hard side's dial arrived)."""

    key: bytes
    attempt: bytes
    peer_ip: str
    started: float
    rng: random.Random = field(default_factory=random.SystemRandom)
    budget: int = EASY_PROBES
    rate: float = PROBES_PER_SECOND
    sent: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        self._ports = self.rng.sample(PORTS, self.budget)

    def due(self, now: float) -> list[tuple[str, int, bytes]]:
        """The probes to send by ``now``: (ip, port, packet)."""
        if self.stopped:
            return []
        allowed = min(self.budget, int((now - self.started) * self.rate) + 1)
        out = []
        while self.sent < allowed:
            port = self._ports[self.sent]
            out.append((self.peer_ip, port, encode(self.key, EASY, self.attempt, self.sent)))
            self.sent += 1
        return out

    def next_time(self) -> float | None:
        """When the next probe is due; None when done."""
        if self.stopped or self.sent >= self.budget:
            return None
        return self.started + self.sent / self.rate

    def stop(self) -> None:
        self.stopped = True


@dataclass
class HardProber:
    """The hard side: one probe per socket (``sockets`` of them, resent once) towards the easy
    side's one address; ``received`` names the socket whose probe came back genuine."""

    key: bytes
    attempt: bytes
    peer: tuple[str, int]
    started: float
    sockets: int = HARD_SOCKETS
    sends: int = 0
    winner: int | None = None
    ignored: int = 0  # datagrams that were not a genuine probe from the peer

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """(socket index, packet) to send by ``now``: all at the start, all again once."""
        rounds = 1 if now - self.started < HARD_RESEND_AFTER else 2
        out: list[tuple[int, bytes]] = []
        while self.winner is None and self.sends < rounds * self.sockets:
            index = self.sends % self.sockets
            out.append((index, encode(self.key, HARD, self.attempt, index)))
            self.sends += 1
        return out

    def received(self, index: int, data: bytes, source: tuple[str, int]) -> int | None:
        """A datagram on socket ``index``: the winning socket once a genuine probe arrived."""
        if self.winner is not None:
            return self.winner
        if source != self.peer or verify(self.key, data, EASY, self.attempt) is None:
            self.ignored += 1
            return None
        self.winner = index
        return index

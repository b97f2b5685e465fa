"""The UDP tunnels' datagram format (sans-I/O; docs/protocol.md "UDP flows").

Every DATAGRAM frame on a peer or relay connection is one tunneled UDP datagram, never
split or merged::

    flow id (QUIC varint) | payload

A datagram larger than the connection's DATAGRAM frames carry *now* (before the path MTU
probe succeeded; qh3 as a server never probes) but at most STREAM_LIMIT bytes goes whole
on the flow's own stream instead, as one record (inside the end-to-end TLS when relayed)::

    length (2 bytes, big endian) | payload

Larger ones are dropped and counted. The flow id is the id of the QUIC stream that opened the flow on *that* connection (a
relay rewrites it from one connection's stream to the other's; id 0 is never a flow: the
qh3 keepalive filler is a zero-filled frame). Directly, the payload is the UDP payload.
Through a relay it is sealed end to end (:class:`FlowSeal`): the relay forwards what it
cannot read, as it splices the TLS records of relayed streams::

    counter (4 bytes, big endian) | AES-256-GCM(key, nonce = direction | counter, payload) + tag (16)
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
COUNTER_SIZE = 4
TAG_SIZE = 16
SEAL_OVERHEAD = COUNTER_SIZE + TAG_SIZE
COUNTER_LIMIT = 1 << (8 * COUNTER_SIZE)  # datagrams one direction of a flow may seal

# nonce prefixes: the two directions of a flow share its key, never a nonce
_FROM_SOURCE = b"\x01" + bytes(7)
_FROM_DESTINATION = b"\x02" + bytes(7)


def varint_size(value: int) -> int:
    return 1 if value < 1 << 6 else 2 if value < 1 << 14 else 4 if value < 1 << 30 else 8


def encode(flow_id: int, payload: bytes) -> bytes:
    """One DATAGRAM frame's content: the flow id as a QUIC varint (RFC 9000 16), the payload."""
    size = varint_size(flow_id)
    prefix = (size.bit_length() - 1) << (8 * size - 2)
    return (prefix | flow_id).to_bytes(size, "big") + payload


def decode(data: bytes) -> tuple[int, bytes] | None:
    """(flow id, payload), or None for a frame too short to hold its flow id."""
    if not data:
        return None
    size = 1 << (data[0] >> 6)
    if len(data) < size:
        return None
    flow_id = int.from_bytes(data[:size], "big") & ((1 << (8 * size - 2)) - 1)
    return flow_id, data[size:]


# The largest datagram the stream carries when DATAGRAM frames cannot: what one DATAGRAM
# frame carries on any 1500-byte path (IPv6: 1452-byte UDP payload, less 32 bytes of QUIC
# packet and frame, less a 4-byte flow id). docs/udp.md "How large a datagram".
STREAM_LIMIT = 1416
# Relayed, a datagram travels two connections and its sender knows only the first: it goes
# in a DATAGRAM frame only when that fits a frame in a minimum-size (1200-byte) QUIC packet,
# which every connection carries (qh3 2.1 relays, as servers, never send larger packets);
# 1200 less 32 bytes of QUIC packet and frame, a 4-byte flow id and the seal.
RELAYED_FRAME_LIMIT = 1200 - 32 - 4 - 20
RECORD_HEADER = 2


def record(payload: bytes) -> bytes:
    """One datagram as a record on the flow's stream."""
    return len(payload).to_bytes(RECORD_HEADER, "big") + payload


class RecordReader:
    """Datagrams out of a flow stream's bytes, however the stream cut them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The datagrams completed by ``data``. Raises ValueError for a record over STREAM_LIMIT."""
        buffer = self._buffer
        buffer += data
        out = []
        while len(buffer) >= RECORD_HEADER:
            size = int.from_bytes(buffer[:RECORD_HEADER], "big")
            if size > STREAM_LIMIT:
                raise ValueError(f"a {size}-byte datagram record (at most {STREAM_LIMIT})")
            if len(buffer) < RECORD_HEADER + size:
                break
            out.append(bytes(buffer[RECORD_HEADER:RECORD_HEADER + size]))
            del buffer[:RECORD_HEADER + size]
        return out


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


class FlowSeal:
    """One end of a relayed flow's end-to-end protection. The key travels in the flow's
    Connect inside the end-to-end TLS stream, so only the two ends hold it. Sealing stops
    (returns None) after COUNTER_LIMIT datagrams: the flow must then end (a new one starts
    with a new key). Replays are not detected: UDP programs cope with duplicates anyway."""

    def __init__(self, key: bytes, *, source_side: bool) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a flow key is {KEY_SIZE} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self._send_prefix, self._receive_prefix = (
            (_FROM_SOURCE, _FROM_DESTINATION) if source_side else (_FROM_DESTINATION, _FROM_SOURCE)
        )
        self._counter = 0

    def seal(self, payload: bytes) -> bytes | None:
        counter = self._counter
        if counter >= COUNTER_LIMIT:
            return None
        self._counter = counter + 1
        wire = counter.to_bytes(COUNTER_SIZE, "big")
        return wire + self._aead.encrypt(self._send_prefix + wire, payload, None)

    def open(self, sealed: bytes) -> bytes | None:
        """The payload, or None for one that does not authenticate (forged, damaged)."""
        if len(sealed) < SEAL_OVERHEAD:
            return None
        wire = sealed[:COUNTER_SIZE]
        try:
            return self._aead.decrypt(self._receive_prefix + wire, sealed[COUNTER_SIZE:], None)
        except InvalidTag:
            return None

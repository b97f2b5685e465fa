"""qh3 2.1.0 as a server under the anti-amplification limit: two workarounds.

Before a server has validated a client's address it may send at most three times the bytes
it received (RFC 9000 section 8.1). qh3's native core gets this wrong twice, and together
the two made every aioquic client's handshake with a qh3 server fail ("packet builder
capacity exhausted"; docs/performance.md, Known problems, has the lines in qh3's source;
tests/upstream/qh3_aioquic_client_capacity.py reproduces both with the two libraries alone):

1. **Padding after the last packet is not counted.** aioquic pads its client Initial
   datagram to 1200 bytes with zeros *after* the Initial packet. qh3's facade hands the core
   each packet of a datagram as its own slice and the core credits the slice, not the
   datagram: about 520 bytes instead of 1200. :meth:`AmplificationBudget.receive_counting_padding`
   and :func:`core_receive` hand the core the datagram's last packet with the padding
   appended, so all of it counts (the core still drops the padding as before) and the whole
   first flight leaves at once.
2. **A short budget is an error, not a wait.** ``poll_transmit`` checks the budget only
   against a minimal packet, then the builder must fit the next frame (a CRYPTO frame of up
   to 900 bytes) into what is left; when it cannot, ``poll_transmit`` raises. The build is
   transactional, so nothing was sent or consumed, and the budget grows with the client's
   next datagram (which validates the address once it carries a Handshake packet).
   :meth:`AmplificationBudget.poll_transmit_or_wait` takes exactly that error, while the budget
   left is under a datagram, as "nothing to send now". A server flight longer than the
   budget (a long certificate chain) needs that round trip even with 1 fixed.

Both only act on a server before its handshake is complete; anything else goes to qh3
unchanged and every other error is raised as before.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from qh3._hazmat import pull_quic_header
from qh3.quic.connection import QuicConnection, QuicConnectionError

logger = logging.getLogger("connet.quic")

# qh3's BuildError::Capacity as poll_transmit raises it
CAPACITY_EXHAUSTED = "packet builder capacity exhausted"


def trailing_padding(data: bytes, cid_length: int) -> tuple[bytes, bytes] | None:
    """(last packet, the bytes after it) when a datagram ends in bytes that are no packet,
    such as aioquic's zeros after its Initial; else None. Walks the packets as qh3's
    ``QuicConnection.receive_datagram`` does."""
    offset = last = 0
    while offset < len(data):
        try:
            end = pull_quic_header(data, offset, cid_length)[9]
        except ValueError:
            break
        if end <= offset:
            return None
        last, offset = offset, end
    if offset == 0 or offset >= len(data):
        return None
    return data[last:offset], data[offset:]


def core_receive(core: Any, owner: "AmplificationBudget", data: bytes, address: Any, now: float,
                 datagram_size: int | None) -> Any:
    """The core's ``receive_datagram`` as qh3's facade calls it, one packet at a time, but the
    last packet of a padded datagram goes in with its padding (workaround 1)."""
    padded = owner.padded
    if padded is not None and data == padded[0]:
        owner.padded = None
        data += padded[1]
    return core.receive_datagram(data, address, now, datagram_size)


class AmplificationBudget(QuicConnection):
    """The two workarounds, for :class:`connet_quic._qh3.Qh3Connection` to inherit."""

    # (last packet, padding after it) of the datagram being received (workaround 1)
    padded: tuple[bytes, bytes] | None = None

    def receive_counting_padding(self, data: bytes, addr: Any, now: float) -> None:
        """qh3's ``receive_datagram``, with a server in its handshake noting the padding
        after the last packet for :func:`core_receive` (workaround 1)."""
        if not self._is_client and not self._handshake_complete:
            self.padded = trailing_padding(data, self._configuration.connection_id_length)
        try:
            super().receive_datagram(data, addr, now)  # qh3's, past Qh3Connection's hold
        finally:
            self.padded = None

    def poll_transmit_or_wait(self, poll: Callable[[float], Any], now: float) -> Any:
        """The core's next datagram, or None; None too when a server in its handshake has
        too little budget left for its next packet (workaround 2)."""
        try:
            return self._call_core(poll, now)
        except QuicConnectionError as error:
            if self._is_client or self._handshake_complete or error.reason_phrase != CAPACITY_EXHAUSTED:
                raise
            _, _, _, sent, received, _ = self._core.active_path
            if 3 * received - sent >= self._configuration.max_datagram_size:
                raise  # the budget is not what is short: a real error
            logger.debug("qh3 server waits for the client: %d bytes of anti-amplification budget left",
                         3 * received - sent)
            return None

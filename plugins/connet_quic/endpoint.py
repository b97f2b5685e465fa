"""The QUIC endpoint: one UDP socket that both accepts and dials, on a sans-I/O QUIC library.

Its parts, one job each:

- :mod:`connet_quic.router` — :class:`QuicEndpoint`: the socket, the connection-ID map,
  pending handshakes and admission, stateless resets, dispatch of datagrams;
- :mod:`connet_quic.connection` — :class:`QuicEndpointConnection`: one connection's glue
  (events, handshake, close; its timer and keepalive in :mod:`connet_quic.clock`), wired to
  the endpoint by :mod:`connet_quic.wiring`;
- :mod:`connet_quic.stream` — :class:`QuicEndpointStream`, with its backpressure;
- :mod:`connet_quic.addresses`, :mod:`connet_quic.closing`, :mod:`connet_quic.inbox` —
  the socket and canonical addresses, close reasons, the accept queues.

This module names them where the rest of connet (and its tests) import them from.
"""

from __future__ import annotations

from connet_quic.clock import TIMER_SLACK
from connet_quic.connection import QuicEndpointConnection
from connet_quic._reset import RESET_BURST, RESET_RATE, VERSION_NEGOTIATION_BURST, VERSION_NEGOTIATION_RATE
from connet_quic.router import DatagramFilter, QuicEndpoint
from connet_quic.stream import QuicEndpointStream

__all__ = [
    "DatagramFilter",
    "QuicEndpoint",
    "QuicEndpointConnection",
    "QuicEndpointStream",
    "RESET_BURST",
    "RESET_RATE",
    "TIMER_SLACK",
    "VERSION_NEGOTIATION_BURST",
    "VERSION_NEGOTIATION_RATE",
]

"""What a connection may do outside itself, passed in by the endpoint that owns it.

A :class:`~connet_quic.connection.QuicEndpointConnection` never reaches into its endpoint:
it gets the loop (clock, timers), the library, the options and these callbacks, as
hypercorn's ``QuicProtocol(send, call_at, now)`` does. The endpoint makes one wiring and
shares it among its connections.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import TransportOptions

from connet_quic.library import QuicLibrary, QuicLibraryConnection

if TYPE_CHECKING:
    from connet_quic.connection import QuicEndpointConnection

logger = logging.getLogger("connet.quic")

Datagrams = list[tuple[bytes, Any]]  # as the library's datagrams_to_send gives them


@dataclass(frozen=True)
class ConnectionWiring:
    """One endpoint's capabilities for its connections."""

    loop: asyncio.AbstractEventLoop
    library: QuicLibrary[QuicLibraryConnection]
    options: TransportOptions
    send: Callable[[Datagrams], int]  # send a connection's datagrams; the bytes handed over
    route: Callable[[bytes, "QuicEndpointConnection"], None]  # datagrams for this CID go to it
    unroute: Callable[[bytes, "QuicEndpointConnection"], None]  # no longer (if still routed to it)
    accepted: Callable[["QuicEndpointConnection"], None]  # an accepted one completed its handshake
    closed: Callable[["QuicEndpointConnection"], None]  # it is closing (called once)
    terminated: Callable[["QuicEndpointConnection"], None]  # it is done: forget it
    # the TCP peer behind an address that is a TCP pipe (connet_quic.tcp_pipe); None for UDP
    pipe_peer: Callable[[Any], HostPort | None] = lambda addr: None


def contained(connection: "QuicEndpointConnection", doing: str, action: Callable[..., None], *args: Any) -> bool:
    """Run one connection's library work; a failure (a library bug) ends that connection
    only, never the endpoint's others. True if it succeeded."""
    try:
        action(*args)
    except Exception:  # noqa: BLE001 — the one place a connection's failure is contained
        logger.exception("QUIC connection %r failed %s", connection, doing)
        connection.fail(CloseCode.INTERNAL_ERROR, "internal error")
        return False
    return True

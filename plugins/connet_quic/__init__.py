"""Default connet plugin ``quic``: the QUIC transport over aioquic's sans-I/O connection.

One UDP socket per endpoint both accepts and dials (see :mod:`connet_quic.endpoint`).
Everything that depends on aioquic's internals lives in :mod:`connet_quic._aioquic`, so
another library with aioquic's sans-I/O API can reuse the endpoint through its own adapter.
"""

from __future__ import annotations

from typing import Sequence

import connet_core
from connet_core.model import HostPort
from connet_core.transport import TLSIdentity, TransportOptions

from connet_quic._aioquic import AioquicLibrary
from connet_quic.endpoint import QuicEndpoint, QuicEndpointConnection, QuicEndpointStream

__all__ = ["QuicTransport", "QuicEndpoint", "QuicEndpointConnection", "QuicEndpointStream"]


class QuicTransport:
    """A :class:`connet_core.transport.Transport` over one QUIC library adapter."""

    def __init__(self, name: str = "aioquic", library: AioquicLibrary | None = None) -> None:
        self.name = name
        self._library = library if library is not None else AioquicLibrary()

    async def bind(
        self,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions = TransportOptions(),
    ) -> QuicEndpoint:
        return await QuicEndpoint.open(self._library, address, identity=identity, alpns=alpns, options=options)


@connet_core.hookimpl(trylast=True)
def connet_transport_names() -> Sequence[str]:
    return ["aioquic"]


@connet_core.hookimpl(trylast=True)
def connet_transport(name: str) -> QuicTransport | None:
    if name == "aioquic":
        return QuicTransport("aioquic")
    return None

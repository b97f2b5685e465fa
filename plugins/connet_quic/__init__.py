"""Default connet plugin ``quic``: the QUIC transport over a sans-I/O QUIC connection.

One UDP socket per endpoint both accepts and dials (see :mod:`connet_quic.endpoint`).
Everything that depends on a library's internals lives in its adapter:
:mod:`connet_quic._aioquic` (transport name ``aioquic``, the default) and, when qh3 is
installed, :mod:`connet_quic._qh3` (``qh3``; see its docstring for what it cannot do).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import connet_core
from connet_core.model import HostPort
from connet_core.transport import TLSIdentity, TransportOptions

from connet_quic._aioquic import AioquicLibrary
from connet_quic.endpoint import QuicEndpoint, QuicEndpointConnection, QuicEndpointStream

__all__ = ["QuicTransport", "QuicEndpoint", "QuicEndpointConnection", "QuicEndpointStream"]


class QuicTransport:
    """A :class:`connet_core.transport.Transport` over one QUIC library adapter."""

    def __init__(self, name: str = "aioquic", library: Any = None) -> None:
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


def _qh3_installed() -> bool:
    return importlib.util.find_spec("qh3") is not None


@connet_core.hookimpl(trylast=True)
def connet_transport_names() -> Sequence[str]:
    return ["aioquic", "qh3"] if _qh3_installed() else ["aioquic"]


@connet_core.hookimpl(trylast=True)
def connet_transport(name: str) -> QuicTransport | None:
    if name == "aioquic":
        return QuicTransport("aioquic")
    if name == "qh3" and _qh3_installed():
        from connet_quic._qh3 import Qh3Library  # only now: qh3 is optional

        return QuicTransport("qh3", Qh3Library())
    return None

"""Default connet plugin ``quic``: the QUIC transport over a sans-I/O QUIC connection.

One UDP socket per endpoint both accepts and dials (see :mod:`connet_quic.endpoint`).
Everything that depends on a library's internals lives in its adapter:
:mod:`connet_quic._aioquic` (transport name ``aioquic``, the reference) and
:mod:`connet_quic._qh3` (``qh3``, about ten times cheaper per byte; see its docstring for
what it cannot do). ``auto``, the default, is qh3 when it imports and aioquic otherwise:
both are dependencies of ``pip install connet``, so ``auto`` falls back only where qh3 has
no wheel and could not be built.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Sequence

import connet_core
from connet_core.model import HostPort
from connet_core.transport import TLSIdentity, TransportOptions

from connet_quic._aioquic import AioquicLibrary
from connet_quic.endpoint import QuicEndpoint, QuicEndpointConnection, QuicEndpointStream
from connet_quic.library import QuicLibrary, QuicLibraryConnection

__all__ = ["QuicTransport", "QuicEndpoint", "QuicEndpointConnection", "QuicEndpointStream"]


class QuicTransport:
    """A :class:`connet_core.transport.Transport` over one QUIC library adapter."""

    def __init__(self, name: str = "aioquic", library: QuicLibrary[QuicLibraryConnection] | None = None) -> None:
        self.name = name
        self._library: QuicLibrary[QuicLibraryConnection] = library if library is not None else AioquicLibrary()

    async def bind(
        self,
        address: HostPort,
        *,
        identity: TLSIdentity | None,
        alpns: Sequence[str],
        options: TransportOptions = TransportOptions(),
    ) -> QuicEndpoint:
        return await QuicEndpoint.open(self._library, address, identity=identity, alpns=alpns, options=options)


@functools.cache
def _qh3_importable() -> bool:
    """Whether qh3 imports here: found is not enough (a wheel for another platform, a
    broken build), so ``auto`` tries the import itself, once."""
    if importlib.util.find_spec("qh3") is None:
        return False
    try:
        import qh3  # noqa: F401  - the native core loads here, or fails
    except ImportError:
        return False
    return True


@connet_core.hookimpl(trylast=True)
def connet_transport_names() -> Sequence[str]:
    return ["auto", "aioquic", "qh3"] if _qh3_importable() else ["auto", "aioquic"]


@connet_core.hookimpl(trylast=True)
def connet_transport(name: str) -> QuicTransport | None:
    if name == "auto":
        name = "qh3" if _qh3_importable() else "aioquic"
    if name == "aioquic":
        return QuicTransport("aioquic")
    if name == "qh3" and _qh3_importable():
        from connet_quic._qh3 import Qh3Library  # only now: nothing imports qh3 before it is chosen

        return QuicTransport("qh3", Qh3Library())
    return None

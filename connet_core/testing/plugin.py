"""The hook implementations that install a memory network's transport, so that engines
find it through ``plugins.load_hooks`` exactly as they find the QUIC transports."""

from __future__ import annotations

from connet_core import hookimpl
from connet_core.testing.network import MemoryNetwork, MemoryTransport

__all__ = ["MemoryTransportPlugin", "memory_transport_plugin"]


class MemoryTransportPlugin:
    """Hook implementations that provide ``network``'s transport under ``name``."""

    def __init__(self, network: MemoryNetwork, name: str = "memory") -> None:
        self.name = name
        self._transport = network.transport(name)

    @hookimpl
    def connet_transport_names(self) -> list[str]:
        return [self.name]

    @hookimpl
    def connet_transport(self, name: str) -> MemoryTransport | None:
        return self._transport if name == self.name else None


def memory_transport_plugin(network: MemoryNetwork, name: str = "memory") -> MemoryTransportPlugin:
    """A plugin object for ``plugins.load_hooks(extra_plugins=[...])``."""
    return MemoryTransportPlugin(network, name)

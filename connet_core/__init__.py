"""connet: a peer-to-peer reverse proxy for NAT traversal over QUIC.

The embedding API. Components are async: ``await Client(settings).run()`` serves until
cancelled. See docs/embedding.md.
"""

from __future__ import annotations

import pluggy

hookimpl = pluggy.HookimplMarker("connet")

__all__ = ["hookimpl", "Client", "Control", "Relay", "Server", "load_config"]


def __getattr__(name: str):  # lazy: importing connet_core must stay cheap for plugins
    if name == "load_config":
        from connet_core.config import load_config

        return load_config
    if name == "Client":
        from connet_core.client import Client

        return Client
    if name == "Control":
        from connet_core.control import Control

        return Control
    if name == "Relay":
        from connet_core.relay import Relay

        return Relay
    if name == "Server":
        from connet_core.server import Server

        return Server
    raise AttributeError(name)

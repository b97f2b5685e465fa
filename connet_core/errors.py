"""The one exception tree of connet.

::

    ConnetError                      base of everything connet raises on purpose
    ├── ConfigError                  bad configuration: one line naming the key and its origin
    ├── PluginError                  a plugin failed to load, is misspelled, unknown, or failed in a hook
    ├── StoreError                   the store is unreadable, corrupt or not writable
    ├── ProtocolError                a malformed, oversized or unexpected message (carries a CloseCode)
    ├── AuthError                    authentication or authorization refused (carries a CloseCode)
    └── TransportError               anything below the protocol
        ├── DialError                a dial failed (unreachable, handshake timeout, bad certificate)
        ├── ConnectionLost           the connection closed; carries the close code and reason
        └── StreamReset              the peer reset the stream; carries the code

Code that handles errors matches on these classes and their attributes, never on text.
"""

from __future__ import annotations

from connet_core.codes import CloseCode


class ConnetError(Exception):
    """Base class of every error connet raises on purpose."""


class ConfigError(ConnetError):
    """A configuration problem. ``str(err)`` is the single line shown to the user."""


class PluginError(ConnetError):
    """A plugin could not be loaded or validated, or failed in a hook. ``plugin`` (its entry
    point name) and ``hook`` say which, when one plugin's call failed."""

    def __init__(self, message: str, *, plugin: str | None = None, hook: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook


class StoreError(ConnetError):
    """The store could not be read or written."""


class ProtocolError(ConnetError):
    """The peer sent something malformed, oversized or out of order.

    ``code`` is the close code (an int from :class:`connet_core.codes.CloseCode`)
    to close the offending stream or connection with.
    """

    def __init__(self, message: str, code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = int(code)


class AuthError(ConnetError):
    """Authentication or authorization was refused. ``code`` goes to the peer, the message to the log."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = int(code)


class TransportError(ConnetError):
    """Base of errors from the transport seam."""


class DialError(TransportError):
    """Dialing a remote endpoint failed."""


class ConnectionLost(TransportError):
    """The connection is closed. ``code``/``reason`` are what the closing side sent;
    ``by_peer`` tells whether the remote side closed it."""

    def __init__(self, code: int, reason: str = "", by_peer: bool = True) -> None:
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
        self.by_peer = by_peer


class StreamReset(TransportError):
    """The remote side reset the stream (or stopped reading it) with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"stream reset (code {code})")
        self.code = code

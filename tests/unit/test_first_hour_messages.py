"""Messages a new user meets (issue 18): a control session closed without a code says what
closed it, never a bare "ok"."""

from __future__ import annotations

from connet_core.client.control_link import _why_lost
from connet_core.errors import ConnectionLost
from connet_core.protocol.codes import CloseCode


def test_a_close_without_a_code_is_not_called_ok() -> None:
    assert _why_lost(ConnectionLost(CloseCode.OK, "transport close 0x0: bye", by_peer=True)) == (
        "the server closed the connection (transport close 0x0: bye)"
    )
    assert _why_lost(ConnectionLost(CloseCode.OK, "", by_peer=False)) == "the connection closed"


def test_a_close_code_is_named() -> None:
    assert _why_lost(ConnectionLost(CloseCode.SHUTDOWN, "shutdown")) == "shutdown"

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


def test_library_warnings_that_repeat_ours_become_debug() -> None:
    import logging

    from connet_core.logs import DemoteRepeats

    demote = DemoteRepeats()
    root = logging.getLogger()
    before = root.level

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("quic", logging.WARNING, __file__, 1, message, None, None)

    try:
        root.setLevel(logging.INFO)
        repeated = record("[4387ebda30a3fd86] Error: 298, reason: self-signed certificate")
        assert not demote.filter(repeated) and repeated.levelname == "DEBUG"
        assert not demote.filter(record("Native peer close: ('peer_closed', False, 298, 6, b'x')"))
        kept = record("Version negotiation packet contains protocol version 1")  # ours says nothing of it
        assert demote.filter(kept) and kept.levelno == logging.WARNING
        root.setLevel(logging.DEBUG)  # asked for debug: shown, as a debug line
        assert demote.filter(record("[ab] Error: 298, reason: self-signed certificate"))
    finally:
        root.setLevel(before)

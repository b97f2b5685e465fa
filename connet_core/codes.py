"""The one registry of close codes: QUIC application error codes, stream reset codes and
the ``code`` of refusal messages all come from here."""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    OK = 0  # normal close
    SHUTDOWN = 1  # the process is stopping
    PROTOCOL_ERROR = 2  # malformed, oversized or unexpected message
    AUTH_FAILED = 3  # unknown token (the log says more; the peer learns nothing else)
    FORBIDDEN = 4  # address, name or role not allowed
    PROOF_FAILED = 5  # the identity proof did not check out
    UNKNOWN_PEER = 6  # a certificate no matched peer announced
    DESTINATION_UNREACHABLE = 7  # the destination could not connect to its addr
    NO_ROUTE = 8  # the ends share no allowed route
    DUPLICATE = 9  # a duplicate connection closed by the deterministic rule
    INTERNAL_ERROR = 10
    TIMEOUT = 11
    REPLACED = 12  # a newer session of the same client took over
    GRANT_INVALID = 13  # a relay grant that is forged, expired or for another name
    NOT_FOUND = 14  # no destination of that name here
    PEER_RESET = 15  # the peer forgot this connection: it restarted
    TCP_RESET = 16  # the program at the other end of the tunnel reset its TCP connection
    PROTOCOL_MISMATCH = 17  # a tcp source asked a udp destination of the same name, or the reverse
    UNAVAILABLE = 18  # this control instance cannot reach the shared state: use another one

    @classmethod
    def describe(cls, code: int) -> str:
        try:
            return cls(code).name.lower().replace("_", "-")
        except ValueError:
            return f"code-{code}"

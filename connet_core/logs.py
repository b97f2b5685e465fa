"""Logging set-up: text or JSON, one event per line (stdlib logging)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from connet_core.model import HostPort

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
# attributes every LogRecord has; anything else was passed in ``extra`` and is an event field
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                event[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"


# The QUIC libraries' warnings that repeat what our own lines say with more context: a
# failed handshake or a peer's close (aioquic "[cid] Error: 298, reason: self-signed
# certificate", qh3 "Native peer close: ..."): the dial error, "lost the control server"
# or "direct path ... closed" line names the peer and what follows. Shown at debug only.
_REPEATED_BY_US = re.compile(r"^(\[[0-9a-fA-F]*\] )?(Error: \d+, reason: |Native peer close: |Native protocol error: )")


class DemoteRepeats(logging.Filter):
    """On the "quic" logger: the messages above become debug records (kept when the process
    logs at debug, dropped otherwise); every other library warning passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG or not _REPEATED_BY_US.match(record.getMessage()):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # libraries below us are chatty at debug and say nothing a user needs at info
    for name in ("quic", "aioquic", "qh3", "asyncio"):
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.WARNING))
    library = logging.getLogger("quic")
    if not any(isinstance(f, DemoteRepeats) for f in library.filters):
        library.addFilter(DemoteRepeats())


def log_listening(logger: logging.Logger, role: str, proto: str, addr: HostPort) -> None:
    """The fixed line every daemon logs once a socket is bound (docs/status.md): ``listening <role> <proto> <addr>``."""
    logger.info(
        "listening %s %s %s", role, proto, addr, extra={"event": "listening", "role": role, "proto": proto, "addr": str(addr)}
    )

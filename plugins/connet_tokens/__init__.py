"""Default plugin ``tokens``: token authentication for clients and relays.

Tokens come inline (``tokens``) or from a file (``tokens-file``: one per line, blank lines
and ``#`` comments ignored). The file is re-read whenever its identity (inode, size, mtime)
changes; a file that vanishes or cannot be read keeps the last good set in force and logs an
error once. With per-token rules (matched by position), a reloaded file with a different
number of tokens than rules is refused with an error, and the old set stays in force
(SPEC.md "[control]").

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from connet_core import hookimpl
from connet_core.config import AuthSettings
from connet_core.model import Principal, PrincipalKind

log = logging.getLogger("connet.tokens")

__all__ = ["connet_authenticate", "find_token", "read_tokens_file", "current_tokens"]

# (st_dev, st_ino, st_size, st_mtime_ns): a change in any of them means "read again"
_FileSignature = tuple[int, int, int, int]


@dataclass
class _FileState:
    signature: _FileSignature | None = None  # of the last read attempt, good or refused
    tokens: tuple[bytes, ...] | None = None  # the set in force; None until a first good read
    failing: bool = False  # an error was logged for the current failure streak


# keyed by (resolved path, number of per-token rules or None): the positional check depends
# on the rule count, so two components with different rules must not share a verdict
_files: dict[tuple[str, int | None], _FileState] = {}
# hooks are called from event loops, possibly several in one process (embedding)
_files_lock = threading.Lock()


def read_tokens_file(path: Path) -> tuple[str, ...]:
    """The tokens of a tokens file: one per line, surrounding white space stripped, blank
    lines and lines starting with ``#`` ignored. Raises OSError or UnicodeDecodeError."""
    text = path.read_text(encoding="utf-8")
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            tokens.append(line)
    return tuple(tokens)


def _signature(st: os.stat_result) -> _FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _file_tokens(path: Path, rule_count: int | None) -> tuple[bytes, ...]:
    key = (str(path), rule_count)
    with _files_lock:
        state = _files.setdefault(key, _FileState())
        try:
            signature = _signature(path.stat())
        except OSError as exc:
            _log_failure(state, "tokens file %s cannot be read (%s): keeping the last good set", path, exc.strerror)
            return state.tokens or ()
        if signature == state.signature:
            return state.tokens or ()
        try:
            tokens = read_tokens_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            # not recording the signature: the next call tries again
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            _log_failure(state, "tokens file %s cannot be read (%s): keeping the last good set", path, reason)
            return state.tokens or ()
        state.signature = signature
        if rule_count is not None and len(tokens) != rule_count:
            # rules are matched to tokens by position: a shifted list would give tokens
            # the wrong rules, so the whole new file is refused
            log.error(
                "tokens file %s has %d tokens but %d per-token restrictions are configured: "
                "refusing the new file, the previous tokens stay in force",
                path,
                len(tokens),
                rule_count,
            )
            state.failing = True
            return state.tokens or ()
        if state.tokens is not None:
            log.info("tokens file %s reloaded: %d tokens", path, len(tokens))
        state.tokens = tuple(t.encode("utf-8") for t in tokens)
        state.failing = False
        return state.tokens


def _log_failure(state: _FileState, msg: str, *args: object) -> None:
    if not state.failing:
        log.error(msg, *args)
        state.failing = True


def current_tokens(settings: AuthSettings) -> tuple[bytes, ...]:
    """The tokens in force for ``settings``, UTF-8 encoded, in configured order."""
    source = settings.tokens
    if source.tokens is not None:
        return tuple(t.encode("utf-8") for t in source.tokens)
    if source.file is not None:
        rule_count = None if settings.token_rules is None else len(settings.token_rules)
        return _file_tokens(Path(source.file), rule_count)
    return ()


def find_token(tokens: tuple[bytes, ...], presented: str) -> int | None:
    """The index of ``presented`` in ``tokens``, or None.

    Every token is compared (no early exit), each with ``hmac.compare_digest``, so the time
    taken depends on the number and lengths of the tokens, not on which one matched."""
    candidate = presented.encode("utf-8", errors="surrogatepass")
    found: int | None = None
    for index, token in enumerate(tokens):
        if hmac.compare_digest(token, candidate) and found is None:
            found = index
    return found


@hookimpl(trylast=True)
def connet_authenticate(settings: AuthSettings, kind: PrincipalKind, token: str) -> Principal | None:
    index = find_token(current_tokens(settings), token)
    if index is None:
        return None
    return Principal(kind=kind, token_index=index, label=f"token#{index}")

"""Default plugin ``tokens``: token authentication for clients and relays.

Tokens come inline (``tokens``) or from a file (``tokens-file``: one per line, blank lines
and ``#`` comments ignored). The file is re-read whenever its identity (inode, size, mtime,
ctime) changes; a file that vanishes, cannot be read or is refused (connet_core.files: not a
regular file, larger than 4 MiB, not UTF-8; or a token too long for the protocol) keeps the
last good set in force and logs an error once.
With per-token rules (matched by position), a reloaded file with a different number of
tokens than rules is refused with an error, and the old set stays in force
(docs/configuration.md, "[control]").

The hook runs in one of connet's hook worker threads (it is a plain function), and the file
is never read there either: only its ``stat`` is taken (which returns at once whatever the
file is), and a changed file is read by the plugin's own reader thread. The hook waits for
that read at most :data:`RELOAD_WAIT` seconds (the first read of a file
:data:`FIRST_READ_WAIT`), so a normal edit takes effect on the very call that notices it,
while a read that hangs (a dead network file system) delays that one decision by at most
that much: the calls after it keep the last good set until the read finishes.

The keys (``[server] tokens``, ``[control] client-tokens``, the per-token rules...) are this
plugin's, declared in those sections (:mod:`connet_tokens.settings`); a per-token rule
reaches the cidr plugin as the principal's claims.

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from connet_core import hookimpl
from connet_core.files import FileRefused
from connet_core.model import Principal, PrincipalKind, Veto
from connet_core.plugin_settings import PluginKey
from connet_core.token_files import read_tokens_file
from connet_tokens.settings import Group, check, declared_keys, group_for

log = logging.getLogger("connet.tokens")

__all__ = ["connet_authenticate", "connet_check_settings", "connet_plugin_keys", "current_tokens", "find_token",
           "read_tokens_file"]

# (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): a change in any of them means "read
# again" (ctime: a chmod that makes an unreadable file readable changes nothing else)
_FileSignature = tuple[int, int, int, int, int]

# How long the hook waits for a changed file's read before answering with the set in force.
RELOAD_WAIT = 0.05
FIRST_READ_WAIT = 2.0

# One worker: reads are rare, and one hung read must not take more threads with it.
_reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="connet-tokens")


@dataclass
class _FileState:
    signature: _FileSignature | None = None  # of the last read attempt, good or refused
    tokens: tuple[bytes, ...] | None = None  # the set in force; None until a first good read
    failing: bool = False  # an error was logged for the current failure streak
    reading: concurrent.futures.Future | None = None  # the read in flight, if any
    reading_signature: _FileSignature | None = None  # what the stat said when it started
    reading_deadline: float = 0.0  # until when callers may wait for it (monotonic)


# keyed by (resolved path, number of per-token rules or None): the positional check depends
# on the rule count, so two components with different rules must not share a verdict
_files: dict[tuple[str, int | None], _FileState] = {}
# hooks are called from event loops, possibly several in one process (embedding)
_files_lock = threading.Lock()


def _signature(st: os.stat_result) -> _FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _file_tokens(path: Path, rule_count: int | None) -> tuple[bytes, ...]:
    key = (str(path), rule_count)
    with _files_lock:
        state = _files.setdefault(key, _FileState())
        try:
            # stat never blocks on what the path is (a FIFO, a device): only reads can
            signature = _signature(path.stat())
        except OSError as exc:
            _log_failure(state, "tokens file %s cannot be read (%s): keeping the last good set", path, exc.strerror)
            return state.tokens or ()
        if signature == state.signature:
            return state.tokens or ()
        if state.reading is None or state.reading_signature != signature:
            # a newer change than the read in flight: read again (the worker queues it)
            first = state.tokens is None and not state.failing
            state.reading = _reader.submit(read_tokens_file, path)
            state.reading_signature = signature
            state.reading_deadline = time.monotonic() + (FIRST_READ_WAIT if first else RELOAD_WAIT)
        reading = state.reading
        wait = max(0.0, state.reading_deadline - time.monotonic())  # one budget per read, not per call
    # the lock is not held while waiting: other event loops keep answering from the set in force
    try:
        outcome: tuple[str, ...] | Exception = reading.result(timeout=wait)
    except concurrent.futures.TimeoutError:
        return _in_force(key)
    except (FileRefused, ValueError) as exc:
        outcome = exc
    with _files_lock:
        if state.reading is reading:  # the first caller to see the result applies it
            state.reading = None
            _apply(state, path, signature, rule_count, outcome)
        return state.tokens or ()


def _in_force(key: tuple[str, int | None]) -> tuple[bytes, ...]:
    with _files_lock:
        return _files[key].tokens or ()


def _apply(
    state: _FileState, path: Path, signature: _FileSignature, rule_count: int | None,
    outcome: tuple[str, ...] | Exception,
) -> None:
    """Put a finished read in force, or log why not (once per failure streak)."""
    if isinstance(outcome, FileRefused):
        if outcome.errno is None:
            # the file itself is unusable (a FIFO, a device, too large): not read again until
            # it changes, so looking at it costs a stat. A system error (EMFILE...) may pass:
            # then the signature is not recorded and the next call tries again.
            state.signature = signature
        _log_failure(state, "tokens file %s: keeping the last good set", outcome)
        return
    state.signature = signature
    if isinstance(outcome, Exception):
        _log_failure(state, "tokens file %s: %s: keeping the last good set", path, outcome)
        return
    tokens = outcome
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
        return
    if state.tokens is not None:
        log.info("tokens file %s reloaded: %d tokens", path, len(tokens))
    state.tokens = tuple(t.encode("utf-8") for t in tokens)
    state.failing = False


def _log_failure(state: _FileState, msg: str, *args: object) -> None:
    if not state.failing:
        log.error(msg, *args)
        state.failing = True


def current_tokens(plugin_settings: Mapping[str, object], group: Group) -> tuple[bytes, ...]:
    """The tokens in force for ``group``'s keys, UTF-8 encoded, in configured order."""
    tokens = plugin_settings.get(group.tokens)
    if tokens is not None:
        return tuple(t.encode("utf-8") for t in tokens)  # type: ignore[union-attr]
    path = plugin_settings.get(group.file)
    if path is not None:
        rules = group.rule_list(plugin_settings)
        return _file_tokens(Path(path), None if rules is None else len(rules))  # type: ignore[arg-type]
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
def connet_plugin_keys() -> list[PluginKey]:
    return declared_keys()


@hookimpl(trylast=True)
def connet_check_settings(section: str, plugin_settings: Mapping[str, object], files: bool) -> None:
    check(section, plugin_settings, files)


@hookimpl(trylast=True)
def connet_authenticate(kind: PrincipalKind, token: str, plugin_settings: Mapping[str, object]) -> Principal | Veto | None:
    group = group_for(plugin_settings, kind)
    if group is None:
        return None
    index = find_token(current_tokens(plugin_settings, group), token)
    if index is None:
        return None
    label = f"token#{index}"
    rules = group.rule_list(plugin_settings)
    if rules is None:
        return Principal(kind=kind, label=label)
    if index >= len(rules):
        # rules are positional: a token without one slipped past the checks; refusing is the safe reading
        return Veto(f"{label}: no per-token restriction at position {index} ({len(rules)} configured)")
    return Principal(kind=kind, label=label, claims=MappingProxyType(rule_claims(rules[index])))


def rule_claims(rule: Mapping[str, object]) -> dict[str, object]:
    """A configured per-token rule as the claims the cidr plugin enforces (strings, as any
    authentication plugin would write them)."""
    claims: dict[str, object] = {}
    for key in ("allow-cidrs", "deny-cidrs"):
        if rule.get(key):
            claims[key] = tuple(str(network) for network in rule[key])  # type: ignore[attr-defined]
    for key in ("name-matches", "role-matches"):
        if rule.get(key) is not None:
            claims[key] = rule[key]
    return claims

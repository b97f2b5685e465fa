"""Relay grants: control's signed statement that a certificate may use a relay for a name
and role until a time. The relay checks them with the key it got at registration, so it
keeps no per-client state and a restart needs no resync. Sans-I/O: time is an argument."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import msgpack

from connet_core.model import Role

GRANT_VERSION = 1
TAG_SIZE = 32
MAX_GRANT_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Grant:
    name: str
    role: Role
    cert_hash: bytes
    expires_at: float  # unix time


def relay_grant_key(control_secret: bytes, relay_cert_hash: bytes) -> bytes:
    """The key for one relay, derived so that the same relay certificate always gets the
    same key: a restarted relay (same store) still accepts grants issued before."""
    return hmac.new(control_secret, b"connet-grant-key/1" + relay_cert_hash, hashlib.sha256).digest()


def issue_grant(key: bytes, grant: Grant) -> bytes:
    body = msgpack.packb([GRANT_VERSION, grant.name, grant.role.value, grant.cert_hash, grant.expires_at])
    return body + hmac.new(key, body, hashlib.sha256).digest()


def check_grant(key: bytes, data: bytes, cert_hash: bytes, now: float) -> Grant | None:
    """The grant if it is authentic, unexpired and for ``cert_hash``; else None."""
    if not isinstance(data, bytes) or not TAG_SIZE < len(data) <= MAX_GRANT_SIZE:
        return None
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).digest()):
        return None
    try:
        version, name, role, granted_hash, expires_at = msgpack.unpackb(body)
        grant = Grant(str(name), Role(role), bytes(granted_hash), float(expires_at))
    except (ValueError, TypeError, msgpack.UnpackException):
        return None  # authentic but unreadable: a newer control; refuse rather than guess
    if version != GRANT_VERSION or grant.cert_hash != cert_hash or grant.expires_at < now:
        return None
    return grant

"""The token format, sans-I/O: ``st1.<claims>.<signature>``, both parts base64url without
padding. The claims are compact JSON: ``sub`` (who, for logs), ``name`` (a glob the announced
names must match), ``role`` (destination, source or any), ``exp`` (Unix time), and optionally
``cidrs`` (where the client may connect from). The signature is Ed25519 over
``st1.<claims>``, so neither part can be changed alone."""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "st1."
ROLES = ("destination", "source", "any")
MAX_TOKEN = 4096  # connet's own limit on a token is larger; ours are far smaller


class BadToken(ValueError):
    """A token of this format that must be refused; the message says why (for the log)."""


@dataclass(frozen=True)
class Claims:
    sub: str
    name: str
    role: str
    exp: int
    cidrs: tuple[str, ...] = ()

    def connet_claims(self) -> dict[str, object]:
        """The principal's claims as connet's cidr plugin enforces them (docs/hooks.md)."""
        claims: dict[str, object] = {"name-matches": fnmatch.translate(self.name), "role-matches": self.role}
        if self.cidrs:
            claims["allow-cidrs"] = list(self.cidrs)
        return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: Ed25519PrivateKey, sub: str, name: str, role: str, ttl: float,
          cidrs: tuple[str, ...] = (), now: float | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    for cidr in cidrs:
        ipaddress.ip_network(cidr, strict=False)  # ValueError for a bad one
    exp = int((time.time() if now is None else now) + ttl)
    body = {"sub": sub, "name": name, "role": role, "exp": exp}
    if cidrs:
        body["cidrs"] = list(cidrs)
    signed = PREFIX + _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return signed + "." + _b64(key.sign(signed.encode("ascii")))


def is_ours(token: str) -> bool:
    return token.startswith(PREFIX)


def verify(public: Ed25519PublicKey, token: str, now: float | None = None) -> Claims:
    """The claims of a valid, unexpired token; BadToken otherwise."""
    if len(token) > MAX_TOKEN:
        raise BadToken("token too long")
    signed, dot, signature = token.rpartition(".")
    if not dot or signed.count(".") != 1:
        raise BadToken("malformed token")
    try:
        public.verify(_unb64(signature), signed.encode("ascii"))
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        raise BadToken("signature does not verify (tampered, or signed with another key)") from None
    try:
        body = json.loads(_unb64(signed[len(PREFIX):]))
        claims = Claims(sub=str(body["sub"]), name=str(body["name"]), role=str(body["role"]), exp=int(body["exp"]),
                        cidrs=tuple(str(c) for c in body.get("cidrs", ())))
    except (ValueError, KeyError, TypeError):
        raise BadToken("signed claims are unreadable") from None
    if claims.role not in ROLES:
        raise BadToken(f"signed role {claims.role!r} is unknown")
    if (time.time() if now is None else now) >= claims.exp:
        raise BadToken(f"token of {claims.sub!r} expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(claims.exp))}")
    return claims

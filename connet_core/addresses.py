"""Direct-path candidate addresses: which to announce and which announced ones to accept."""

from __future__ import annotations

import ipaddress
import logging

import ifaddr

from connet_core.model import HostPort

log = logging.getLogger("connet.addresses")

MAX_CANDIDATES = 8  # per announcement: a client must not turn its peers into a packet cannon


def dialable(addr: HostPort) -> bool:
    """An address a peer may be asked to dial: an IP literal, unicast, a real port."""
    ip = addr.ip()
    if ip is None or addr.port == 0:
        return False
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        return False  # needs a scope id, which means nothing on the peer's machine
    return True


def sanitize(candidates: list[str], observed: HostPort | None) -> tuple[str, ...]:
    """The addresses control passes on: the observed one first, then the client's own,
    parsed, deduplicated, validated and capped."""
    out: list[str] = []
    items = ([str(observed)] if observed is not None else []) + list(candidates)
    for text in items:
        try:
            addr = HostPort.parse(text).normalized()
        except ValueError:
            continue
        if not dialable(addr):
            continue
        value = str(addr)
        if value not in out:
            out.append(value)
        if len(out) >= MAX_CANDIDATES:
            break
    return tuple(out)


def local_candidates(port: int, *, include_loopback: bool = False) -> list[str]:
    """This machine's interface addresses on ``port``; loopback only when asked (a peer on
    another machine dialing 127.0.0.1 would reach itself)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            host = ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip
            try:
                parsed = ipaddress.ip_address(host)
            except ValueError:
                continue
            if parsed.is_loopback and not include_loopback:
                continue
            addr = HostPort(str(parsed), port)
            if dialable(addr):
                out.append(str(addr))
    return out


class DialLimiter:
    """How often a client may start dialing: at most once per ``per_address`` seconds to any
    one address (whichever peer asks), and ``rate`` dials a second overall with bursts of
    ``burst``. Peers name their own addresses, so without this a token holder could make a
    client spray Initials at third parties. Sans-I/O: ``now`` is an argument."""

    def __init__(self, per_address: float = 2.0, rate: float = 20.0, burst: float = 40.0) -> None:
        self.per_address = per_address
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._refilled_at: float | None = None
        self._last: dict[HostPort, float] = {}

    def allow(self, address: HostPort, now: float) -> bool:
        if self._refilled_at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
        last = self._last.get(address)
        if last is not None and now - last < self.per_address:
            return False
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self._last[address] = now
        if len(self._last) > 4096:  # forget addresses whose interval has long passed
            self._last = {a: t for a, t in self._last.items() if now - t < self.per_address}
        return True

"""Keeps one UDP port mapping on the router for the client's direct socket: asks by PCP,
then NAT-PMP, then UPnP IGD, renews at half the lease, deletes the mapping on exit.

Runs beside everything else and never delays anything: until a router answers, the client
works exactly as without port mapping, and a router that answers nothing costs a debug line.
The mapped address is one more candidate peers may dial (``on_change`` re-announces it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from connet_core.model import HostPort
from connet_core.portmap import natpmp, pcp, upnp
from connet_core.portmap.gateway import default_gateway

log = logging.getLogger("connet.client")

LIFETIME = 7200  # seconds asked for; routers may grant less (miniupnpd's max-lifetime)
MIN_RENEW = 30.0  # a router granting seconds would have us renew in a loop
RETRANSMIT = (0.25, 0.5, 1.0)  # RFC 6886's first waits; a router that answers does so at once
UPNP_TIMEOUT = 3.0
RETRY_FAILED = 300.0  # nothing answered: the router is asked again this much later
DELETE_TIMEOUT = 1.0  # on exit, within the runner's 2 s stop

T = TypeVar("T")


class MappingFailed(Exception):
    """One protocol got no mapping (no answer, a refusal, a malformed answer)."""


@dataclass(frozen=True, slots=True)
class MappedAddress:
    protocol: str  # "pcp" | "nat-pmp" | "upnp"
    external: HostPort
    lifetime: int
    obtained: float  # monotonic
    upnp: upnp.UpnpMapping | None = None  # the device to renew and delete with

    def status(self, now: float) -> dict:
        return {"protocol": self.protocol, "external_addr": str(self.external), "lifetime": self.lifetime,
                "expires_in": round(max(0.0, self.obtained + self.lifetime - now), 1)}


class _Answers(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.queue.full():
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: nobody listens
        if not self.queue.full() and isinstance(exc, OSError):
            self.queue.put_nowait(exc)


async def _exchange(gateway: ipaddress.IPv4Address, port: int, make: Callable[[ipaddress.IPv4Address], bytes],
                    parse: Callable[[bytes], T]) -> T:
    """Send ``make(our address)`` to the gateway's ``port`` until ``parse`` accepts an answer."""
    loop = asyncio.get_running_loop()
    transport, answers = await loop.create_datagram_endpoint(_Answers, remote_addr=(str(gateway), port))
    try:
        local = ipaddress.IPv4Address(transport.get_extra_info("sockname")[0])
        request = make(local)
        for wait in RETRANSMIT:
            transport.sendto(request)
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    answer = await asyncio.wait_for(answers.queue.get(), left)
                except TimeoutError:
                    break
                if isinstance(answer, OSError):
                    raise MappingFailed(f"gateway {gateway}: {answer.strerror or answer}")
                return parse(answer)
        raise MappingFailed(f"gateway {gateway} did not answer on port {port}")
    finally:
        transport.close()


def _local_ip_towards(gateway: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((str(gateway), natpmp.PORT))  # no packet: only picks the route's source
        return ipaddress.IPv4Address(sock.getsockname()[0])


class PortMapper:
    """``await run()`` keeps the mapping until cancelled; ``current`` is the live one."""

    def __init__(self, internal_port: int, on_change: Callable[[], None], *,
                 gateway: Callable[[], ipaddress.IPv4Address | None] = default_gateway,
                 server_port: int = natpmp.PORT, upnp_enabled: bool = True) -> None:
        self.internal_port = internal_port
        self._port = server_port  # PCP's and NAT-PMP's (5351; tests use their own)
        self._upnp_enabled = upnp_enabled
        self.current: MappedAddress | None = None
        self.last_error: str | None = None
        self._on_change = on_change
        self._find_gateway = gateway
        self._nonce = os.urandom(12)  # PCP: the same nonce renews the same mapping

    async def run(self) -> None:
        gateway = self._find_gateway()
        if gateway is None:
            log.debug("port mapping: no default gateway to ask")
            return
        try:
            while True:
                mapping = await self._obtain(gateway)
                if mapping is None:
                    self._expire(time.monotonic())
                    await asyncio.sleep(RETRY_FAILED)
                    continue
                previous, self.current = self.current, mapping
                if previous is None or previous.external != mapping.external:
                    log.info("port mapping: %s maps %s to UDP port %d (lease %d s)", mapping.protocol,
                             mapping.external, self.internal_port, mapping.lifetime)
                    self._on_change()
                await asyncio.sleep(max(MIN_RENEW, mapping.lifetime / 2))
        finally:
            if self.current is not None:
                await self._delete(gateway, self.current)

    def _expire(self, now: float) -> None:
        current = self.current
        if current is not None and now >= current.obtained + current.lifetime:
            log.info("port mapping: the %s mapping %s expired", current.protocol, current.external)
            self.current = None
            self._on_change()

    async def _obtain(self, gateway: ipaddress.IPv4Address) -> MappedAddress | None:
        """PCP, NAT-PMP, UPnP in turn (the one holding the mapping first); None if all failed."""
        order = ["pcp", "nat-pmp", "upnp"] if self._upnp_enabled else ["pcp", "nat-pmp"]
        if self.current is not None:
            order.remove(self.current.protocol)
            order.insert(0, self.current.protocol)
        errors = []
        for protocol in order:
            try:
                return await getattr(self, "_" + protocol.replace("-", ""))(gateway)
            except MappingFailed as exc:
                errors.append(f"{protocol}: {exc}")
            except upnp.UpnpFailed as exc:
                errors.append(str(exc))
        self.last_error = "; ".join(errors)
        log.debug("port mapping: none (%s)", self.last_error)
        return None

    async def _pcp(self, gateway: ipaddress.IPv4Address) -> MappedAddress:
        port = self.internal_port
        suggested = self.current.external.port if self.current is not None else port
        try:
            answer = await _exchange(gateway, self._port, lambda local: pcp.map_request(local, self._nonce, port, LIFETIME, suggested),
                                     lambda data: pcp.parse_map(data, self._nonce, port))
        except pcp.PcpError as exc:
            raise MappingFailed(str(exc)) from None
        return MappedAddress("pcp", HostPort(str(answer.external_address), answer.external_port), answer.lifetime,
                             time.monotonic())

    async def _natpmp(self, gateway: ipaddress.IPv4Address) -> MappedAddress:
        port = self.internal_port
        suggested = self.current.external.port if self.current is not None else port
        try:
            external = await _exchange(gateway, self._port, lambda _: natpmp.external_address_request(), natpmp.parse_external_address)
            answer = await _exchange(gateway, self._port, lambda _: natpmp.map_request(port, suggested, LIFETIME),
                                     lambda data: natpmp.parse_map(data, port))
        except natpmp.NatPmpError as exc:
            raise MappingFailed(str(exc)) from None
        return MappedAddress("nat-pmp", HostPort(str(external.address), answer.external_port), answer.lifetime,
                             time.monotonic())

    async def _upnp(self, gateway: ipaddress.IPv4Address) -> MappedAddress:
        current = self.current.upnp if self.current is not None else None
        mapping = await upnp.add_mapping(_local_ip_towards(gateway), self.internal_port, LIFETIME, UPNP_TIMEOUT,
                                         device=current.device if current else None,
                                         external_port=current.external_port if current else None)
        return MappedAddress("upnp", HostPort(str(mapping.external_ip), mapping.external_port), mapping.lifetime,
                             time.monotonic(), mapping)

    async def _delete(self, gateway: ipaddress.IPv4Address, mapping: MappedAddress) -> None:
        port = self.internal_port
        try:
            async with asyncio.timeout(DELETE_TIMEOUT):
                if mapping.protocol == "pcp":
                    await _exchange(gateway, self._port, lambda local: pcp.map_request(local, self._nonce, port, 0),
                                    lambda data: pcp.parse_map(data, self._nonce, port))
                elif mapping.protocol == "nat-pmp":
                    await _exchange(gateway, self._port, lambda _: natpmp.map_request(port, 0, 0),
                                    lambda data: natpmp.parse_map(data, port))
                elif mapping.upnp is not None:
                    await upnp.delete_mapping(mapping.upnp, DELETE_TIMEOUT)
            log.info("port mapping: deleted the %s mapping %s", mapping.protocol, mapping.external)
        except (MappingFailed, upnp.UpnpFailed, pcp.PcpError, natpmp.NatPmpError, TimeoutError) as exc:
            log.warning("port mapping: could not delete the %s mapping %s: %s", mapping.protocol, mapping.external, exc)

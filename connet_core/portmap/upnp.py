"""UPnP IGD port mapping through async-upnp-client: find the gateway's IGD by SSDP, add a
UDP mapping of our port with a lease, delete it on exit. The thin I/O part; what to ask and
when is decided by :mod:`connet_core.portmap.mapper`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpError
from async_upnp_client.client import UpnpAction, UpnpDevice
from async_upnp_client.profiles.igd import IgdDevice
from async_upnp_client.search import SsdpSearchListener

# its debug lines are whole XML descriptions: the client's debug log says what it needs
logging.getLogger("async_upnp_client").setLevel(logging.INFO)

IGD_TYPES = tuple(IgdDevice.DEVICE_TYPES)  # the library's list of IGD v1/v2 device types
DESCRIPTION = "connet"
# the services that map ports (IGD v1 and v2, IP or PPP connections)
WAN_SERVICES = ("urn:schemas-upnp-org:service:WANIPConnection:2", "urn:schemas-upnp-org:service:WANIPConnection:1",
                "urn:schemas-upnp-org:service:WANPPPConnection:1")


class UpnpFailed(Exception):
    """No IGD answered, or it refused the mapping (the message says which)."""


@dataclass
class UpnpMapping:
    device: UpnpDevice
    external_ip: ipaddress.IPv4Address
    external_port: int
    lifetime: int


async def find_igd(local_ip: ipaddress.IPv4Address, timeout: float) -> str:
    """The description URL of the first IGD answering an SSDP search sent from ``local_ip``."""
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_response(headers: object) -> None:
        st, location = headers.get("st"), headers.get("location")  # type: ignore[attr-defined]
        if st in IGD_TYPES and location and not found.done():
            found.set_result(location)

    listener = SsdpSearchListener(async_callback=on_response, source=(str(local_ip), 0),
                                  search_target=IGD_TYPES[0], timeout=max(1, int(timeout)))
    try:
        await listener.async_start()
        listener.async_search()
        return await asyncio.wait_for(found, timeout)
    except (TimeoutError, OSError) as exc:
        raise UpnpFailed(f"no UPnP gateway answered ({type(exc).__name__})") from None
    finally:
        listener.async_stop()


def _action(device: UpnpDevice, name: str) -> UpnpAction:
    # IgdDevice's own helpers send the remote host as an address: "0.0.0.0" is not the
    # wildcard ("") to every IGD, so the SOAP actions are called directly
    for service_type in WAN_SERVICES:
        for service in device.all_services:
            if service.service_type == service_type and service.has_action(name):
                return service.action(name)
    raise UpnpFailed(f"the UPnP gateway has no {name} action")


async def add_mapping(local_ip: ipaddress.IPv4Address, internal_port: int, lifetime: int, timeout: float,
                      device: UpnpDevice | None = None, external_port: int | None = None) -> UpnpMapping:
    """Map UDP ``external_port`` (default: the internal port) to ``local_ip:internal_port``."""
    try:
        if device is None:
            location = await find_igd(local_ip, timeout)
            factory = UpnpFactory(AiohttpRequester(timeout=max(1, int(timeout))), non_strict=True)
            device = await asyncio.wait_for(factory.async_create_device(location), timeout)
        port = external_port or internal_port
        await asyncio.wait_for(_action(device, "AddPortMapping").async_call(
            NewRemoteHost="", NewExternalPort=port, NewProtocol="UDP", NewInternalPort=internal_port,
            NewInternalClient=str(local_ip), NewEnabled=True, NewPortMappingDescription=DESCRIPTION,
            NewLeaseDuration=lifetime), timeout)
        answer = await asyncio.wait_for(_action(device, "GetExternalIPAddress").async_call(), timeout)
        return UpnpMapping(device, ipaddress.IPv4Address(answer.get("NewExternalIPAddress", "")), port, lifetime)
    except (UpnpError, TimeoutError, OSError, ValueError) as exc:
        raise UpnpFailed(f"UPnP: {type(exc).__name__}: {exc}") from None


async def delete_mapping(mapping: UpnpMapping, timeout: float) -> None:
    try:
        await asyncio.wait_for(_action(mapping.device, "DeletePortMapping").async_call(
            NewRemoteHost="", NewExternalPort=mapping.external_port, NewProtocol="UDP"), timeout)
    except (UpnpError, TimeoutError, OSError) as exc:
        raise UpnpFailed(f"UPnP: {type(exc).__name__}: {exc}") from None

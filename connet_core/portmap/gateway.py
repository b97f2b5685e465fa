"""The default gateway, where PCP, NAT-PMP and (by discovery) UPnP are asked for a mapping.

``parse_route_table`` reads Linux's /proc/net/route text (sans-I/O); ``default_gateway``
reads the file. Elsewhere there is no gateway to ask, and port mapping stays off quietly.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

ROUTE_TABLE = Path("/proc/net/route")
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def parse_route_table(text: str) -> ipaddress.IPv4Address | None:
    """The gateway of the default route with the lowest metric, or None."""
    best: tuple[int, ipaddress.IPv4Address] | None = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, gateway, flags, metric = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16), int(fields[6])
            mask = int(fields[7], 16)
        except ValueError:
            continue
        if destination != 0 or mask != 0 or flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY:
            continue
        # the kernel prints the address as a number in host byte order
        address = ipaddress.IPv4Address(gateway.to_bytes(4, sys.byteorder))
        if best is None or metric < best[0]:
            best = (metric, address)
    return best[1] if best else None


def default_gateway(table: Path = ROUTE_TABLE) -> ipaddress.IPv4Address | None:
    try:
        return parse_route_table(table.read_text())
    except OSError:
        return None

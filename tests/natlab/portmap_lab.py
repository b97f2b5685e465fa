"""Port-mapping routers for the NAT lab: the ``hard`` NAT (endpoint-dependent mapping, random
ports) with a real miniupnpd (Debian's, nftables backend) in the router namespace, so a client
behind it can ask for a mapping (docs/natlab.md).

* ``hard-map``: miniupnpd with NAT-PMP/PCP and UPnP IGD (the client's PCP request wins);
* ``hard-igd``: miniupnpd with UPnP IGD only (the client falls back to UPnP).

miniupnpd refuses to map on a WAN address in a reserved range, and the lab only uses
documentation ranges; it accepts one when STUN says the address is public and unfiltered
(``ext_perform_stun``, its "1:1 NAT" mode). So the server namespace gets a second address
and runs ``stunserver.py`` (RFC 5780 CHANGE-REQUEST), and the mapping router lets STUN's
answers in. The router's own traffic is not masqueraded (only the LAN's is), as on a real
router whose WAN address is public.

miniupnpd's rules go into chains of its own (``miniupnpd``, ``prerouting_miniupnpd``,
``postrouting_miniupnpd``) that the router's base chains jump to: a mapping is a DNAT rule
there, which a test reads to see it come and go.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from support.programs import need_program

if TYPE_CHECKING:
    from natlab.lab import Lab, Site

MAPPING_PRESETS: dict[str, dict[str, bool]] = {
    "hard-map": {"natpmp": True, "upnp": True},
    "hard-igd": {"natpmp": False, "upnp": True},
}
# the grid's cells that a mapping makes direct (without it, hard x hard and hard x easy relay)
MAPPING_CELLS: list[tuple[str, str]] = [
    ("hard-map", "hard"), ("hard", "hard-map"), ("hard-map", "easy"), ("easy", "hard-map"), ("hard-igd", "hard"),
]
STUN_IPS = ("203.0.113.10", "203.0.113.11")  # the server's address and a second one
STUN_PORTS = (3478, 3479)
STUNSERVER = Path(__file__).with_name("stunserver.py")


def is_mapping(preset: str) -> bool:
    return preset in MAPPING_PRESETS


def ruleset(preset: str, lan: str) -> str:
    """``hard`` with miniupnpd's chains, the DNAT'd (mapped) inbound accepted, STUN let in."""
    stun = ", ".join(STUN_IPS)
    ports = ", ".join(map(str, STUN_PORTS))
    return (
        "table inet filter {\n"
        " chain input {\n  type filter hook input priority 0;\n"
        f"  iifname \"wan\" ip saddr {{ {stun} }} udp sport {{ {ports} }} accept\n"
        "  iifname \"wan\" ct state new drop\n }\n"
        " chain forward {\n  type filter hook forward priority 0;\n  ct status dnat accept\n  jump miniupnpd\n"
        "  iifname \"wan\" ct state new drop\n }\n"
        " chain miniupnpd {\n }\n"
        "}\n"
        "table inet nat {\n"
        " chain prerouting {\n  type nat hook prerouting priority dstnat;\n  jump prerouting_miniupnpd\n }\n"
        " chain postrouting {\n  type nat hook postrouting priority srcnat;\n  jump postrouting_miniupnpd\n"
        f"  oifname \"wan\" ip saddr {lan}.0/24 masquerade fully-random\n }}\n"
        " chain prerouting_miniupnpd {\n }\n"
        " chain postrouting_miniupnpd {\n }\n"
        "}\n"
    )


def _start_stun(lab: "Lab") -> None:
    if getattr(lab, "stun", None) is not None:
        return
    from natlab.lab import sh

    sh("ip", "addr", "add", f"{STUN_IPS[1]}/24", "dev", "eth0", ns=lab.srv)
    lab.stun = lab.spawn("stun", lab.srv, [sys.executable, str(STUNSERVER), *STUN_IPS, *map(str, STUN_PORTS)])  # type: ignore[attr-defined]
    lab.stun.wait_for(r"stun listening", 10.0)  # type: ignore[attr-defined]


def start_router_daemon(lab: "Lab", site: "Site", lan: str) -> None:
    """miniupnpd in the site's router, once STUN has told it its WAN address is usable."""
    assert site.router is not None
    need_program("miniupnpd")
    _start_stun(lab)
    features = MAPPING_PRESETS[site.preset]
    name = site.router.rsplit("-", 1)[-1]
    config = lab.workdir / f"miniupnpd-{name}.conf"
    config.write_text(
        "ext_ifname=wan\n"
        f"listening_ip=lan\n"
        f"enable_natpmp={'yes' if features['natpmp'] else 'no'}\n"
        f"enable_upnp={'yes' if features['upnp'] else 'no'}\n"
        "ext_perform_stun=yes\n"
        f"ext_stun_host={STUN_IPS[0]}\n"
        f"ext_stun_port={STUN_PORTS[0]}\n"
        "secure_mode=yes\n"
        "system_uptime=no\n"
        "min_lifetime=120\n"
        "max_lifetime=86400\n"
        f"uuid={uuid.uuid4()}\n"
        "upnp_table_name=filter\n"
        "upnp_nat_table_name=nat\n"
        "upnp_forward_chain=miniupnpd\n"
        "upnp_nat_chain=prerouting_miniupnpd\n"
        "upnp_nat_postrouting_chain=postrouting_miniupnpd\n"
        f"allow 1024-65535 {lan}.0/24 1024-65535\n"
        "deny 0-65535 0.0.0.0/0 0-65535\n"
    )
    daemon = lab.spawn(f"miniupnpd@{name}", site.router,
                       ["miniupnpd", "-d", "-f", str(config), "-P", str(lab.workdir / f"miniupnpd-{name}.pid")])
    daemon.wait_for(r"Port forwarding is now enabled|Listening for NAT-PMP/PCP|HTTP listening", 15.0)


def mapped_ports(lab: "Lab", router: str) -> list[tuple[int, str, int]]:
    """The UDP mappings miniupnpd holds in the router: (external port, internal ip, internal port)."""
    from natlab.lab import sh

    data = json.loads(sh("nft", "-j", "list", "chain", "inet", "nat", "prerouting_miniupnpd", ns=router))
    found = []
    for item in data["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        dport = dnat = None
        for expr in rule["expr"]:
            match = expr.get("match")
            if match and isinstance(match.get("left"), dict) and match["left"].get("payload", {}).get("field") == "dport":
                dport = match["right"]
            if "dnat" in expr:
                dnat = (expr["dnat"].get("addr"), expr["dnat"].get("port"))
        if dport is not None and dnat is not None:
            found.append((int(dport), str(dnat[0]), int(dnat[1])))
    return found

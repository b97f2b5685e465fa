"""What listens where: every example binds its status endpoint and its sources to loopback,
and a status endpoint on a non-loopback address logs a warning (it has no authentication)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from connet_core.model import HostPort
from support.cluster import TOKENS

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))


def _loopback(text: str) -> bool:
    addr = HostPort.parse(text)
    if addr.host == "localhost":
        return True
    ip = addr.ip()
    return ip is not None and ipaddress.ip_address(ip).is_loopback


def _local_binds(config: dict) -> list[tuple[str, str]]:
    """(key path, address) of every status endpoint and every source listener in a config."""
    out = []
    for section, table in config.items():
        if not isinstance(table, dict):
            continue
        if "status-addr" in table:
            out.append((f"{section}.status-addr", table["status-addr"]))
        for name, source in table.get("sources", {}).items():
            out.append((f"{section}.sources.{name}.addr", source["addr"]))
    return out


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_status_and_sources_bind_loopback(path: Path) -> None:
    config = tomllib.loads(path.read_text())
    for key, addr in _local_binds(config):
        assert _loopback(addr), f"{path.name}: {key} = {addr!r} is not loopback"


def test_the_scan_can_fail() -> None:
    """The checker itself flags an open status address and an open source."""
    config = {"client": {"status-addr": "0.0.0.0:19182", "sources": {"web": {"addr": ":9000"}}}}
    assert [_loopback(addr) for _, addr in _local_binds(config)] == [False, False]


@pytest.mark.parametrize("status_addr, warns", [("0.0.0.0:0", True), ("127.0.0.1:0", False)],
                         ids=["any-interface", "control-loopback"])
async def test_status_on_a_non_loopback_address_warns(daemons, server, status_addr: str, warns: bool) -> None:
    """Binds only (port 0 on this machine); nothing is sent anywhere."""
    client = daemons.start("client", [*server.client_args(TOKENS[0]), "--dst-name", "web",
                                      "--dst-addr", "127.0.0.1:9", "--status-addr", status_addr])
    client.wait_for("listening status tcp")
    client.wait_for("connected to control server")
    warning = "status endpoint .* is not on loopback: it has no authentication"
    if warns:
        client.wait_for(warning)
    else:
        import re

        assert not re.search(warning, client.log())

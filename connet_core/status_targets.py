"""Where ``connet tui --config FILE`` finds status endpoints: each file on its own.

The daemons layer their ``--config`` files into one configuration; the dashboard must not,
since each file is usually another daemon (a client, a server) and layering would keep only
one ``status-addr``. Nor does it need a whole configuration: only the ``status-addr`` of the
file's ``[client]``, ``[server]``, ``[control]`` or ``[relay]``, so a partial file will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from connet_core.config.layers import read_config_file
from connet_core.errors import ConfigError
from connet_core.model import HostPort

SECTIONS = ("client", "server", "control", "relay")


def status_url(addr: HostPort) -> str:
    """The URL of a status address: an every-interface bind is reachable on loopback."""
    return f"http://{HostPort(addr.host or '127.0.0.1', addr.port)}/"


def status_urls(files: Iterable[Path]) -> list[str]:
    """One URL per ``status-addr`` of each file, in order. Raises ConfigError naming the
    file (and key) that has none or a bad one."""
    urls: list[str] = []
    for path in files:
        data = read_config_file(path)
        found = 0
        for section in SECTIONS:
            table = data.get(section)
            value = table.get("status-addr") if isinstance(table, dict) else None
            if value is None:
                continue
            try:
                addr = HostPort.parse(value) if isinstance(value, str) else None
            except ValueError as exc:
                raise ConfigError(f"{path}: {section}.status-addr: {exc}") from None
            if addr is None or addr.port == 0:
                raise ConfigError(f"{path}: {section}.status-addr: {value!r} names no port the dashboard can reach")
            found += 1
            if status_url(addr) not in urls:
                urls.append(status_url(addr))
        if not found:
            raise ConfigError(f"{path}: no status-addr in [client], [server], [control] or [relay]: "
                              "the dashboard reads the status endpoint from there")
    return urls

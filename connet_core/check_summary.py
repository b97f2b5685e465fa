"""What ``connet check`` says a configuration would run: one line per command section (who
may connect is the authentication plugins' settings, not summarized here)."""

from __future__ import annotations

from connet_core.config import Config
from connet_core.model import HostPort


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _addr(addr: HostPort | None) -> str:
    return "disabled" if addr is None else str(addr)


def _addrs(addrs: tuple[HostPort, ...]) -> str:
    return ", ".join(str(a) for a in addrs)


def summarize(config: Config) -> str:
    """One line saying what ``config`` would run, for ``connet check``."""
    if config.client is not None:
        client = config.client
        parts = []
        for word, endpoints in (("destination", client.destinations), ("source", client.sources)):
            names = ", ".join(e.name for e in endpoints)
            parts.append(_plural(len(endpoints), word) + (f" ({names})" if names else ""))
        return f"client: {', '.join(parts)}; control server {_addrs(client.server_addrs or (client.server_addr,))}; status {_addr(client.status_addr)}"
    if config.server is not None:
        server = config.server
        control = server.control
        return (
            f"server: control on {control.addr}, relay on {server.relay_addr} "
            f"(advertised as {server.relay_hostname}); status {_addr(control.status_addr)}"
        )
    if config.control is not None:
        control = config.control
        return f"control: on {control.addr}; status {_addr(control.status_addr)}"
    assert config.relay is not None
    relay = config.relay
    return (
        f"relay: on {relay.addr} (advertised as {relay.hostname}), registers with {_addrs(relay.control_addrs or (relay.control_addr,))}; "
        f"status {_addr(relay.status_addr)}"
    )

"""What ``connet version`` prints: connet's version, Python's, the QUIC libraries' and the
transport ``auto`` resolves to here (asked of the transport plugins, as the daemons do)."""

from __future__ import annotations

import importlib.metadata
import platform

from connet_core.errors import PluginError

__all__ = ["QUIC_LIBRARIES", "version_lines"]

QUIC_LIBRARIES = ("aioquic", "qh3")


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _auto_transport() -> str:
    from connet_core.plugins import load_hooks

    try:
        return load_hooks().transport("auto").name
    except PluginError as exc:  # no plugin provides "auto": say so, it is what a daemon would hit
        return f"none ({exc})"


def version_lines() -> list[str]:
    from connet_core.status import connet_version

    lines = [
        f"connet {connet_version()}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
    ]
    lines += [f"{name} {_distribution_version(name)}" for name in QUIC_LIBRARIES]
    lines.append(f"transport auto: {_auto_transport()}")
    return lines

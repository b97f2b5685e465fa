"""Reading systemd unit files the way systemd does, as far as the tests need: sections,
repeated keys, ``Environment=`` assignments (quoted or not) and the specifiers we use."""

from __future__ import annotations

import shlex
from pathlib import Path

UNIT_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNITS = ["connet-server.service", "connet-control.service", "connet-relay.service", "connet-client@.service"]
PROGRAM = "/opt/connet/bin/connet"  # where the units expect connet (docs/deploy.md)


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value), ...] in file order (keys repeat: Environment=, SystemCallFilter=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a key=value line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def expand(text: str, specifiers: dict[str, str]) -> str:
    """systemd's %-specifiers (%i, %S, ...) from ``specifiers``; ``%%`` is a percent sign."""
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%" and index + 1 < len(text):
            spec = text[index + 1]
            out.append("%" if spec == "%" else specifiers[spec])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def environment(unit: dict[str, list[tuple[str, str]]], specifiers: dict[str, str]) -> dict[str, str]:
    env = {}
    for line in values(unit, "Service", "Environment"):
        for assignment in shlex.split(expand(line, specifiers)):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def exec_start(unit: dict[str, list[tuple[str, str]]], specifiers: dict[str, str]) -> list[str]:
    (line,) = values(unit, "Service", "ExecStart")
    return shlex.split(expand(line, specifiers))

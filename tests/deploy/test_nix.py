"""The Nix files: every one parses (nix-instantiate --parse; nixpkgs cannot be fetched here, so
the modules are not evaluated), and the table the NixOS modules make their options from
(packaging/nix/modules/keys.nix, plain data) is evaluated and held against
docs/configuration.md: every option is a documented key of its section, with the documented
default. The modules' unit hardening is the systemd units' (hardening.nix)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.conftest import ROOT, require
from deploy.units import UNIT_DIR, parse_unit

NIX_FILES = sorted([ROOT / "flake.nix", *(ROOT / "packaging" / "nix").rglob("*.nix")])
MODULES = ROOT / "packaging" / "nix" / "modules"
# keys.nix section -> the heading of its table in docs/configuration.md
DOC_SECTIONS = {"common": "Root keys", "client": "`[client]`", "server": "`[server]`", "control": "`[control]`",
                "relay": "`[relay]`"}


@pytest.fixture(scope="module")
def nix() -> str:
    path = shutil.which("nix-instantiate")
    require(None if path else "nix-instantiate is not installed (apt-get install nix-bin)")
    return str(path)


def _eval_json(nix: str, path: Path) -> object:
    result = subprocess.run([nix, "--eval", "--strict", "--json", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def documented_keys() -> dict[str, dict[str, str]]:
    """Section heading -> {key: its default cell}, from the tables of docs/configuration.md."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("## "):
            current = tables.setdefault(line[3:].strip(), {})
        elif current is not None and line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for key in re.findall(r"`([^`]+)`", cells[0]):
                if not key.startswith("["):  # a [table] naming where the key lives
                    current[key] = cells[-1]
    return tables


def test_every_nix_file_parses(nix: str) -> None:
    assert {p.name for p in NIX_FILES} >= {"flake.nix", "package.nix", "default.nix", "mk-module.nix", "keys.nix",
                                           "hardening.nix", "client.nix", "server.nix", "control.nix", "relay.nix"}
    for path in NIX_FILES:
        result = subprocess.run([nix, "--parse", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{path.relative_to(ROOT)}: {result.stderr}"


def test_the_flake_exposes_a_module_per_command_and_the_package() -> None:
    text = (ROOT / "flake.nix").read_text()
    for command in ("client", "server", "control", "relay"):
        assert f"{command} = ./packaging/nix/modules/{command}.nix;" in text
        module = (MODULES / f"{command}.nix").read_text()
        assert f'command = "{command}";' in module
    assert "callPackage ./packaging/nix/package.nix" in text


def test_every_module_option_is_a_documented_key_with_its_default(nix: str) -> None:
    keys = _eval_json(nix, MODULES / "keys.nix")
    docs = documented_keys()
    assert isinstance(keys, dict)
    for section, heading in DOC_SECTIONS.items():
        (title,) = [t for t in docs if t.startswith(heading)]
        documented = docs[title]
        for name, key in keys[section].items():
            assert name in documented, f"keys.nix {section}.{name} is not a key of '{title}' in docs/configuration.md"
            assert key["type"] in {"str", "path", "secretPath", "listOfStr"}, name
            if key["default"] is not None:
                assert f"`{key['default']}`" in documented[name], f"{section}.{name}: default differs from the docs"
    for ports in ("udpAddrs", "tcpAddrs"):
        for section, addrs in keys[ports].items():
            assert set(addrs) <= set(keys[section]), section
    assert set(keys) == {*DOC_SECTIONS, "udpAddrs", "tcpAddrs"}


def test_the_modules_harden_their_units_like_the_systemd_units(nix: str) -> None:
    """Each hardening key of packaging/systemd is in hardening.nix with the same value."""
    hardening = _eval_json(nix, MODULES / "hardening.nix")
    assert isinstance(hardening, dict)
    unit = parse_unit(UNIT_DIR / "connet-server.service")
    from_unit: dict[str, list[str]] = {}
    for key, value in unit["Service"]:
        if key in hardening:
            from_unit.setdefault(key, []).append(value)
    assert set(from_unit) == set(hardening), set(hardening) ^ set(from_unit)
    for key, values in from_unit.items():
        assert values == _as_unit_lines(hardening[key]), key


def _as_unit_lines(value: object) -> list[str]:
    """How NixOS writes a serviceConfig value: a list as one line per item, booleans yes/no."""
    items = value if isinstance(value, list) else [value]
    return [("yes" if item else "no") if isinstance(item, bool) else str(item) for item in items]

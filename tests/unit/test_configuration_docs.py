"""docs/configuration.md names every key the configuration accepts."""

from __future__ import annotations

from pathlib import Path

from connet_core.config import SCHEMA, _Array, _Leaf, _Named

DOC = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()


def keys(schema: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, spec in schema.items():
        if isinstance(spec, _Leaf):
            out.append((*path, name))
        elif isinstance(spec, (_Named, _Array)):
            out.extend(keys(spec.schema, (*path, name)))
        else:
            out.extend(keys(spec, (*path, name)))
    return out


def test_every_key_is_documented() -> None:
    missing = [".".join(k) for k in keys(SCHEMA) if f"`{k[-1]}`" not in DOC]
    assert not missing


def test_every_table_is_documented() -> None:
    # `[client]`, `[client.destinations.NAME]`, `[server.ip-restriction]`, `[[server.token-restriction]]`
    tables = {".".join(k[:-1]) for k in keys(SCHEMA) if len(k) > 1}
    missing = sorted(t for t in tables if f"[{t}" not in DOC)
    assert not missing

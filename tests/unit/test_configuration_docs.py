"""docs/configuration.md names every key the configuration accepts."""

from __future__ import annotations

from pathlib import Path

from connet_core.config import SCHEMA, _Array, _Leaf, _Named
from connet_core.config.plugin_keys import schema_with_plugins
from connet_core.plugins import DEFAULT_PLUGINS, load_hooks

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


def with_default_plugins() -> dict:
    """SCHEMA with the keys the default plugins put in its sections ([server] tokens...): they
    are connet's keys to its users, documented on the same page."""
    declared = load_hooks().declared
    schema = schema_with_plugins({name: declared.get(name, ()) for name in DEFAULT_PLUGINS})
    assert schema["server"] != SCHEMA["server"]  # the tokens plugin's keys are there
    return {name: spec for name, spec in schema.items() if name != "plugins"}


def test_every_key_is_documented() -> None:
    missing = [".".join(k) for k in keys(with_default_plugins()) if f"`{k[-1]}`" not in DOC]
    assert not missing


def test_every_table_is_documented() -> None:
    # `[client]`, `[client.destinations.NAME]`, `[server.ip-restriction]`, `[[server.token-restriction]]`
    tables = {".".join(k[:-1]) for k in keys(with_default_plugins()) if len(k) > 1}
    missing = sorted(t for t in tables if f"[{t}" not in DOC)
    assert not missing

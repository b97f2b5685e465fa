"""The ``[plugins.NAME]`` part of the key tree: built from what the installed plugins declare
(``connet_plugin_keys``), so their keys are layered, checked and reported exactly like
connet's own (unknown key, wrong type: one line naming ``plugins.NAME.KEY``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from connet_core.config.schema import SCHEMA, _Array, _Leaf, _Spec
from connet_core.errors import PluginError
from connet_core.plugin_settings import PluginKey

PLUGINS = "plugins"


@dataclass(frozen=True, slots=True)
class _PluginLeaf(_Leaf):
    """A plugin's key: ``kind`` is a :data:`connet_core.plugin_settings.KINDS` name,
    converted by connet_core.plugin_settings.convert."""


def declared_keys() -> dict[str, tuple[PluginKey, ...]]:
    """What every installed plugin declares, disabled ones included: a file may keep the
    settings of a plugin that ``disable-plugins`` turns off."""
    from connet_core import plugins  # the plugin manager, only when a configuration is loaded

    return plugins.load_hooks().declared


def schema_with_plugins(declared: Mapping[str, Sequence[PluginKey]]) -> dict[str, _Spec]:
    """:data:`SCHEMA` plus a ``plugins`` table with one table per plugin that declares keys,
    and the keys plugins put in core sections, as core keys of those sections (so files,
    ``CONNET_SECTION__KEY`` variables, flags and messages treat them exactly alike). A
    section key that connet or another plugin has already is a PluginError naming both."""
    tables: dict[str, _Spec] = {
        name: {key.key: _PluginLeaf(key.kind) for key in keys if key.section is None}
        for name, keys in declared.items() if any(key.section is None for key in keys)
    }
    schema: dict[str, _Spec] = {**SCHEMA, PLUGINS: tables}
    owners: dict[tuple[str, str], str] = {}
    for name, keys in declared.items():
        for key in keys:
            if key.section is None:
                continue
            section = dict(schema[key.section])  # type: ignore[arg-type]
            if key.key in section:
                owner = owners.get((key.section, key.key), "connet")
                raise PluginError(f"plugin {name!r}: key {key.key!r} in [{key.section}] is {owner}'s already",
                                  plugin=name, hook="connet_plugin_keys")
            section[key.key] = section_spec(key)
            schema[key.section] = section
            owners[(key.section, key.key)] = f"plugin {name!r}"
    return schema


def section_spec(key: PluginKey) -> _Spec:
    """A plugin's key in a core section as the schema language says it."""
    if key.kind in ("table", "tables"):
        fields = {field[0]: _field_leaf(field[1], tuple(field[2]) if len(field) > 2 else ()) for field in key.fields}
        return fields if key.kind == "table" else _Array(fields)
    return _field_leaf(key.kind, key.choices)


def _field_leaf(kind: str, choices: tuple[str, ...]) -> _Leaf:
    if choices:
        return _Leaf("enum", tuple(choices))
    return _Leaf({"string": "text"}.get(kind, kind))


def section_keys(declared: Mapping[str, Sequence[PluginKey]], section: str) -> dict[str, tuple[PluginKey, ...]]:
    """The keys each plugin has in ``[section]``, by plugin name."""
    return {name: tuple(k for k in keys if k.section == section) for name, keys in declared.items()
            if any(k.section == section for k in keys)}


def alternatives(declared: Mapping[str, Sequence[PluginKey]]) -> tuple[tuple[str, tuple[str, str]], ...]:
    """Pairs of section keys that say one thing two ways (``tokens``/``tokens-file``), as
    :data:`connet_core.config.schema.TOKEN_GROUPS` lists connet's own."""
    pairs: dict[tuple[str, frozenset[str]], tuple[str, str]] = {}
    for keys in declared.values():
        for key in keys:
            if key.section is not None and key.alternative:
                pairs.setdefault((key.section, frozenset((key.key, key.alternative))), (key.key, key.alternative))
    return tuple((section, members) for (section, _), members in pairs.items())


def env_part(part: str, spec: Mapping[str, _Spec]) -> str:
    """The key of ``spec`` a ``CONNET_...`` name part stands for: variable names have no
    hyphens, so ``SIGNED_TOKENS`` is ``signed-tokens``, and a plugin named ``my_auth`` is
    matched by ``MY_AUTH`` too."""
    if part in spec:
        return part
    for key in spec:
        if key.replace("_", "-") == part:
            return key
    return part

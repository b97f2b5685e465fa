"""The ``[plugins.NAME]`` part of the key tree: built from what the installed plugins declare
(``connet_plugin_keys``), so their keys are layered, checked and reported exactly like
connet's own (unknown key, wrong type: one line naming ``plugins.NAME.KEY``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from connet_core.config.schema import SCHEMA, _Leaf, _Spec
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
    """:data:`SCHEMA` plus a ``plugins`` table with one table per plugin that declares keys."""
    tables: dict[str, _Spec] = {
        name: {key.key: _PluginLeaf(key.kind) for key in keys} for name, keys in declared.items() if keys
    }
    return {**SCHEMA, PLUGINS: tables}


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

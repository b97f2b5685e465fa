"""Plugin settings: the keys a plugin declares and the values its hooks get (public API).

A plugin declares its keys with the ``connet_plugin_keys`` hook, a list of :class:`PluginKey`
(name, type, default, one-line doc). Users set them in a root-level ``[plugins.NAME]`` table
(NAME: the plugin's entry point name) or as ``CONNET_PLUGINS__NAME__KEY``; connet validates
them like its own keys (docs/configuration.md) and hands each hook implementation that names a
``plugin_settings`` argument its own plugin's values, defaults filled in, as a
:class:`PluginSettings`.

Sans-I/O: this module reads nothing; paths are made absolute against the directory of the
file that set them, not opened.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# The types a plugin key can have. Each is written in TOML as shown; from the environment the
# value is read as that type (an array as a TOML array, a boolean as true/false).
KINDS = {
    "string": "a non-empty string",
    "integer": "an integer",
    "number": "a number (integer or float)",
    "boolean": "true or false",
    "strings": "an array of non-empty strings",
    "path": "a file or directory (relative to the config file that names it)",
}

_KEY = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class PluginKey:
    """One setting a plugin declares. ``key`` is lower case with hyphens (``public-key``);
    ``kind`` one of :data:`KINDS`; ``default`` is what the hooks get when the user sets
    nothing (None: no value, the plugin decides what that means); ``doc`` is one line."""

    key: str
    kind: str
    default: object = None
    doc: str = ""

    def problem(self) -> str | None:
        """Why this declaration is unusable, or None."""
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            return f"key {self.key!r}: use lower-case letters, digits and single hyphens (like public-key)"
        if self.kind not in KINDS:
            return f"key {self.key!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
        if self.default is not None:
            try:
                convert(self.kind, self.default, Path("."))
            except ValueError as exc:
                return f"key {self.key!r}: default {self.default!r}: {exc}"
        if not isinstance(self.doc, str) or "\n" in self.doc:
            return f"key {self.key!r}: doc must be one line"
        return None


class PluginSettings(Mapping[str, object]):
    """One plugin's settings: every declared key, the user's value or the default.
    Read-only; ``settings["public-key"]`` or ``settings.get("public-key")``."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> object:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PluginSettings({self._values!r})"



def describe_value(value: object) -> str:
    """What kind of TOML value ``value`` is, for messages ("an integer", "a table")."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def convert(kind: str, value: object, base_dir: Path) -> object:
    """``value`` as ``kind``; raises ValueError with the reason (no key, no origin)."""
    if kind == "string" or kind == "path":
        if not isinstance(value, str):
            raise ValueError(f"expected {KINDS[kind]}, got {describe_value(value)}")
        if not value.strip():
            raise ValueError("must not be empty")
        return value if kind == "string" else base_dir / Path(value).expanduser()
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe_value(value)}")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {describe_value(value)}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {describe_value(value)}")
        return value
    if kind == "strings":
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected an array of strings, got {describe_value(value)}")
        for index, item in enumerate(value, 1):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"item {index}: expected a non-empty string, got {describe_value(item)}")
        return tuple(value)
    raise ValueError(f"unknown kind {kind!r}")


def env_kind_is_toml(kind: str) -> bool:
    """Whether a ``CONNET_PLUGINS__...`` value of this kind is parsed as a TOML value (arrays,
    numbers, booleans) rather than taken as the string it is."""
    return kind in ("integer", "number", "boolean", "strings")


def with_defaults(keys: list[PluginKey] | tuple[PluginKey, ...], given: Mapping[str, object]) -> PluginSettings:
    return PluginSettings({k.key: given.get(k.key, k.default) for k in keys})

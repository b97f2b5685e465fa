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

# The core sections a plugin may put keys in (``PluginKey.section``): those of the daemons,
# which have flags. Such a key is checked by connet's own converters, so it may also be one
# of these kinds (a table's fields too, but not another table):
SECTIONS = ("server", "control", "relay")
SECTION_KINDS = {
    "string": "a non-empty string (with choices: one of them)",
    "strings": KINDS["strings"],
    "path": KINDS["path"],
    "cidrs": "an array of CIDRs (like 10.0.0.0/8)",
    "regex": "a regular expression",
    "table": "a table of fields ([SECTION.KEY])",
    "tables": "an array of tables of fields ([[SECTION.KEY]]: file only, no flag)",
}
_FIELD_KINDS = ("string", "strings", "path", "cidrs", "regex")


@dataclass(frozen=True, slots=True)
class PluginKey:
    """One setting a plugin declares. ``key`` is lower case with hyphens (``public-key``);
    ``kind`` one of :data:`KINDS`; ``default`` is what the hooks get when the user sets
    nothing (None: no value, the plugin decides what that means); ``doc`` is one line."""

    key: str
    kind: str
    default: object = None
    doc: str = ""
    # Where the key lives: None for the plugin's own ``[plugins.NAME]`` table, or a core
    # section of :data:`SECTIONS` (``[server] tokens``, ``CONNET_SERVER__TOKENS``,
    # ``connet server --tokens``), validated and reported exactly like connet's own keys of
    # that section. Such a key has no default (its absence is for the plugin to judge), and
    # is in the hooks' ``plugin_settings`` (None when not set) only when the running command
    # reads that section: ``"tokens" in plugin_settings`` tells ``connet server`` apart.
    section: str | None = None
    # kind "table"/"tables": (field, kind) or (field, "string", choices) for each field
    fields: tuple[tuple, ...] = ()
    choices: tuple[str, ...] = ()  # kind "string" in a section: the values allowed
    alternative: str = ""  # in a section: the key that says the same thing another way
    needs: tuple[str, ...] = ()  # in a section: keys of which one must be given with this one

    def problem(self) -> str | None:
        """Why this declaration is unusable, or None."""
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            return f"key {self.key!r}: use lower-case letters, digits and single hyphens (like public-key)"
        if self.section is not None:
            return self._section_problem()
        if self.kind not in KINDS:
            return f"key {self.key!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
        if self.default is not None:
            try:
                convert(self.kind, self.default, Path("."))
            except ValueError as exc:
                return f"key {self.key!r}: default {self.default!r}: {exc}"
        if not isinstance(self.doc, str) or "\n" in self.doc:
            return f"key {self.key!r}: doc must be one line"
        if self.fields or self.choices or self.alternative or self.needs:
            return f"key {self.key!r}: fields, choices, alternative and needs are for keys in a core section"
        return None

    def _section_problem(self) -> str | None:
        where = f"key {self.key!r} in [{self.section}]"
        if self.section not in SECTIONS:
            return f"{where}: section must be one of {', '.join(SECTIONS)}"
        if self.kind not in SECTION_KINDS:
            return f"{where}: kind {self.kind!r} is not one of {', '.join(SECTION_KINDS)}"
        if self.default is not None:
            return f"{where}: a key in a core section has no default"
        if not isinstance(self.doc, str) or "\n" in self.doc:
            return f"{where}: doc must be one line"
        if (self.kind in ("table", "tables")) != bool(self.fields):
            return f"{where}: fields are given for, and only for, kinds table and tables"
        for field in self.fields:
            name, kind, choices = (*field, ())[:3] if len(field) in (2, 3) else ("?", "?", ())
            if not isinstance(name, str) or not _KEY.match(name) or kind not in _FIELD_KINDS:
                return f"{where}: field {name!r} of kind {kind!r} (kinds: {', '.join(_FIELD_KINDS)})"
            if choices and (kind != "string" or not all(isinstance(c, str) and c for c in choices)):
                return f"{where}: field {name!r}: choices are non-empty strings, for kind string"
        if self.choices and (self.kind != "string" or not all(isinstance(c, str) and c for c in self.choices)):
            return f"{where}: choices are non-empty strings, for kind string"
        for other in (self.alternative, *self.needs) if self.alternative else self.needs:
            if not isinstance(other, str) or not _KEY.match(other):
                return f"{where}: {other!r} (alternative or needs) is not a key name"
        return None


class SettingProblem(ValueError):
    """What ``connet_check_settings`` raises for a setting that is wrong beyond its type:
    ``key`` (a key of yours) and what is wrong, or ``key=None`` for something missing. connet
    reports it as one line naming the key and where it was set (exit code 2)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


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
    """Every key of the plugin's own table (the user's value or the default), and the keys
    in core sections the configuration gave (it gives those of the running command's
    section, None where unset)."""
    return PluginSettings({k.key: given.get(k.key, k.default) for k in keys
                           if k.section is None or k.key in given})

"""Layering the configuration's sources with dynaconf.

Each source is read and checked by :mod:`.layers` first (files through the safe reader, with
the nesting checks, before TOML parsing; ``CONNET_*`` variables converted by the key's type;
flags) and every key is checked against :data:`~.schema.SCHEMA` here, before dynaconf sees
it. Then one ``Dynaconf`` settings object, built with its public constructor, stores the
layers in order (files as given, environment, flags) with ``merge_enabled=True``: tables merge
key by key and a later layer wins per key. What dynaconf would otherwise do to user data, and
how it is kept out (each of these is covered by tests/unit/test_config_dynaconf.py):

- **Leaves are opaque.** Every value reaches dynaconf wrapped in a :class:`~.schema._Value`
  (value, origin, base directory, layer), so dynaconf neither interprets strings (a token
  ``"@del"``, ``"@format {env}"`` or ``"dynaconf_merge"`` is data) nor concatenates arrays:
  an array (or array of tables) from a later layer replaces the earlier one whole, as
  documented. ``auto_cast=False`` as well, for anything not wrapped.
- **Names keep their case.** dynaconf matches keys case-insensitively when merging, which
  would fold ``[client.destinations.Web]`` into ``[client.destinations.web]``: the names of
  named tables are stored hex-encoded and decoded when read back. Schema keys are all lower
  case; dynaconf upper-cases the top-level ones, they are lower-cased when read back.
- **Nothing but our layers is read.** No settings file, include, preload, secrets file,
  ``.env`` or environment loader of dynaconf's runs (``settings_files=[]``, ``includes=[]``,
  ``preload=[]``, ``secrets=None``, ``core_loaders=[]``, ``loaders=[]``,
  ``load_dotenv=False``, ``envvar_prefix=None``), and these constructor arguments win over
  the ``*_FOR_DYNACONF`` variables dynaconf would read from the environment, so a stray
  ``SETTINGS_FILE_FOR_DYNACONF=/dev/zero`` or ``DYNACONF_X`` changes nothing. dynaconf's own
  environment loader is not used because it parses every value as TOML (a token ``1234``
  would become an integer, ``true`` a boolean): ``CONNET_*`` values are read as the key's
  declared type instead (docs/configuration.md).
- **Origins.** Every leaf carries where it came from; every table carries a marker leaf, so
  the origin of a table is the last layer that defined it, merged by dynaconf like any key.
- **Token groups.** ``token`` in one file and ``token-file`` in another is an error, checked
  before layering; a group member set by the environment or a flag replaces the members
  the lower layers set (read back by the members' layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from connet_core.config.schema import _MISPLACED, SCHEMA, TOKEN_GROUPS, _Array, _dotted, _Named, _Spec, _suggest, _Value
from connet_core.errors import ConfigError

__all__ = ["Table", "layer"]

# the marker leaf of a table; a key TOML files cannot get past the key check
_ORIGIN_KEY = "\x00origin"
# named-table names are stored hex-encoded under this prefix (lower-case ASCII, no dots)
_NAME_PREFIX = "n"


class Table(dict):
    """A table of the layered tree; ``origin`` is where it was (last) defined, ``rank`` that
    source's layer."""

    def __init__(self, origin: str, rank: int = 0) -> None:
        super().__init__()
        self.origin = origin
        self.rank = rank


def check_keys(tree: Table, schema: Mapping[str, _Spec] = SCHEMA, path: tuple[str, ...] = ()) -> None:
    """Refuse a key the schema does not know, naming the source that set it, before the
    layer reaches dynaconf (whose own keys, ``dynaconf_include`` and the like, are unknown
    keys here). Types are checked later, on the merged tree."""
    for key, node in tree.items():
        key_path = (*path, key)
        dotted = _dotted(key_path)
        if key not in schema:
            raise ConfigError(f"{node.origin}: {dotted}: unknown key{unknown_hint(key_path, schema)}")
        spec = schema[key]
        if not isinstance(node, Table):
            continue
        if isinstance(spec, dict):
            check_keys(node, spec, key_path)
        elif isinstance(spec, _Named):
            for name, sub in node.items():
                if isinstance(sub, Table):
                    check_keys(sub, spec.schema, (*key_path, name))


def unknown_hint(path: tuple[str, ...], schema: Mapping[str, _Spec]) -> str:
    """What to say after "unknown key": where the key belongs, a close spelling, or, for a
    plugins table, that no installed plugin declares settings by that name."""
    dotted = _dotted(path)
    if dotted in _MISPLACED:
        return f" ({_MISPLACED[dotted]})"
    if len(path) == 2 and path[0] == "plugins":
        known = ", ".join(sorted(schema)) or "none"
        return f" (no installed plugin named {path[1]!r} takes settings; plugins with settings: {known})"
    return _suggest(path[-1], schema)


Groups = Sequence[tuple[str, tuple[str, str]]]


def check_file_groups(trees: Sequence[Table], groups: Groups = TOKEN_GROUPS) -> None:
    """``token`` in one file and ``token-file`` in another (and the other groups) is an error:
    which one was meant is not clear, so neither replaces the other."""
    seen: dict[tuple[str, str], str] = {}  # (section, member) -> the file that set it
    for tree in trees:
        for section, members in groups:
            table = tree.get(section)
            if not isinstance(table, Table):
                continue
            for key in (m for m in members if m in table):
                for other in members:
                    if other != key and (section, other) in seen:
                        raise ConfigError(
                            f"{table[key].origin}: {section}.{key}: conflicts with "
                            f"{section}.{other} from {seen[(section, other)]}: give one of them"
                        )
            for key in (m for m in members if m in table):
                seen[(section, key)] = table[key].origin


def _encode_name(name: str) -> str:
    return _NAME_PREFIX + name.encode("utf-8", "surrogatepass").hex()


def _decode_name(stored: str) -> str:
    return bytes.fromhex(stored[len(_NAME_PREFIX) :]).decode("utf-8", "surrogatepass")


def _named_at(schema: Mapping[str, _Spec] | None, key: str) -> bool:
    return schema is not None and isinstance(schema.get(key), _Named)


def _sub_schema(schema: Mapping[str, _Spec] | None, key: str) -> Mapping[str, _Spec] | None:
    spec = schema.get(key) if schema is not None else None
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, (_Named, _Array)):
        return spec.schema
    return None


def _to_store(table: Table, schema: Mapping[str, _Spec] | None, names: bool = False) -> dict[str, object]:
    """A plain dict for dynaconf: leaves stay wrapped, tables get their marker, the keys of a
    named table (``names``) are encoded."""
    out: dict[str, object] = {_ORIGIN_KEY: _Value(None, table.origin, Path("."), table.rank)}
    for key, node in table.items():
        stored = _encode_name(key) if names else key
        if isinstance(node, Table):
            sub = schema if names else _sub_schema(schema, key)
            out[stored] = _to_store(node, sub, names=not names and _named_at(schema, key))
        else:
            out[stored] = node
    return out


def _from_store(
    data: Mapping[str, object], schema: Mapping[str, _Spec] | None, names: bool = False, path: tuple[str, ...] = ()
) -> Table:
    marker = data.get(_ORIGIN_KEY)
    table = Table(marker.origin, marker.rank) if isinstance(marker, _Value) else Table("")
    for stored, node in data.items():
        if stored == _ORIGIN_KEY:
            continue
        key = _decode_name(stored) if names else stored
        if isinstance(node, Mapping):
            sub = schema if names else _sub_schema(schema, key)
            table[key] = _from_store(node, sub, not names and _named_at(schema, key), (*path, key))
        elif isinstance(node, _Value):
            table[key] = node
        else:
            # only our layers put values in, always wrapped: anything else dynaconf loaded by
            # itself (a dynaconf release that reads more by default), and it is not used
            raise ConfigError(f"{_dotted((*path, key))}: set by dynaconf itself, not by a connet layer: refused")
    return table


def _drop_lower_group_members(tree: Table, groups: Groups) -> None:
    """A token group set by a higher layer replaces what the lower layers set."""
    for section, members in groups:
        table = tree.get(section)
        if not isinstance(table, Table):
            continue
        given = [m for m in members if isinstance(table.get(m), _Value)]
        if not given:
            continue
        top = max(table[m].rank for m in given)
        for member in given:
            if table[member].rank < top:
                del table[member]


def _new_settings():  # -> dynaconf.Dynaconf
    from dynaconf import Dynaconf  # imported when a configuration is loaded, not by every import

    return Dynaconf(
        settings_files=[],
        includes=[],
        preload=[],
        secrets=None,
        core_loaders=[],
        loaders=[],
        environments=False,
        load_dotenv=False,
        envvar_prefix=None,
        merge_enabled=True,
        auto_cast=False,
    )


def layer(trees: Sequence[Table], schema: Mapping[str, _Spec] = SCHEMA, groups: Groups = TOKEN_GROUPS) -> Table:
    """Layer ``trees`` (lowest first: files in order, then environment, then flags) through
    dynaconf and return the merged tree. Raises ConfigError for an unknown key or a token group
    split across files, naming the source. ``schema``: SCHEMA with the plugins' keys;
    ``groups``: TOKEN_GROUPS with the plugins' pairs of alternative keys."""
    from dynaconf.loaders.base import SourceMetadata

    for tree in trees:
        check_keys(tree, schema)
    check_file_groups([tree for tree in trees if tree.rank == 0], groups)
    settings = _new_settings()
    for tree in trees:
        source = SourceMetadata("connet", tree.origin, "global")
        for key, value in _to_store(tree, schema).items():
            if key != _ORIGIN_KEY:
                settings.set(key, value, loader_identifier=source, merge=True)
    merged = {key.lower(): value for key, value in settings.as_dict().items() if key.lower() in schema}
    result = _from_store(merged, schema)
    _drop_lower_group_members(result, groups)
    return result

"""Layers of a configuration: TOML files (read by the safe reader, checked before parsing),
``CONNET_*`` environment variables and flags, each value kept with its origin."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Sequence

from connet_core.config.schema import (
    _LIST_KINDS,
    _MISPLACED,
    SCHEMA,
    TOKEN_GROUPS,
    _Array,
    _dotted,
    _Leaf,
    _Named,
    _Spec,
    _suggest,
    _Value,
)
from connet_core.config.settings import ENV_PREFIX
from connet_core.config_limits import TooDeep, check_depth, check_toml_text
from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file

# --- layered values -------------------------------------------------------------------------


class _Table(dict):
    """A table of the layered tree; ``origin`` is where it was (last) defined."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin


def _to_tree(raw: Mapping[str, object], origin: str, base_dir: Path) -> _Table:
    """Wrap a parsed TOML mapping: tables stay tables (merged key by key), everything else,
    arrays of tables included, becomes a leaf (replaced whole)."""
    table = _Table(origin)
    for key, value in raw.items():
        if isinstance(value, Mapping):
            table[key] = _to_tree(value, origin, base_dir)
        else:
            table[key] = _Value(value, origin, base_dir)
    return table


def _deep_merge(base: _Table, top: _Table) -> _Table:
    """``top`` over ``base``: tables key by key, anything else replaced whole."""
    merged = _Table(top.origin if top else base.origin)
    merged.update(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(old, _Table) and isinstance(value, _Table):
            merged[key] = _deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _group_members(tree: _Table, section: str, members: tuple[str, str]) -> list[str]:
    table = tree.get(section)
    if not isinstance(table, _Table):
        return []
    return [m for m in members if m in table]


def _drop_groups_set_by(base: _Table, top: _Table) -> _Table:
    """Remove from ``base`` every token group ``top`` sets any member of."""
    result = _deep_merge(_Table(base.origin), base)  # a copy: layers are not mutated
    for section, members in TOKEN_GROUPS:
        if _group_members(top, section, members) and isinstance(result.get(section), _Table):
            table = _deep_merge(_Table(result[section].origin), result[section])
            for member in members:
                table.pop(member, None)
            result[section] = table
    return result


def _merge_files(trees: Sequence[_Table]) -> _Table:
    merged = _Table("")
    for tree in trees:
        for section, members in TOKEN_GROUPS:
            old = _group_members(merged, section, members)
            new = _group_members(tree, section, members)
            for key in new:
                for other in old:
                    if other != key:
                        raise ConfigError(
                            f"{tree[section][key].origin}: {section}.{key}: conflicts with "
                            f"{section}.{other} from {merged[section][other].origin}: give one of them"
                        )
        merged = _deep_merge(merged, tree)
    return merged


# --- reading the layers ---------------------------------------------------------------------


class _LoaderHost:
    """The part of a dynaconf settings object that ``BaseLoader.get_source_data`` touches.

    A real ``Dynaconf`` object, once set up, also reads ``SETTINGS_FILE_FOR_DYNACONF`` and the
    other ``*_FOR_DYNACONF`` variables and loads the files they name: a stray variable in the
    user's environment would then break (or change) our configuration."""

    def __init__(self) -> None:
        self.__core__ = SimpleNamespace(config=SimpleNamespace(loaded_files=[]))


def read_config_file(path: Path) -> dict[str, object]:
    """The raw mapping of one TOML file, read by dynaconf's TOML loader (nothing else of
    dynaconf applies: see the module docstring). Raises ConfigError naming the file."""
    from dynaconf.loaders.base import BaseLoader
    from dynaconf.vendor import tomllib as dynaconf_tomllib

    origin = str(path)
    # read here, safely (files.py: no FIFO, device or huge file), and hand dynaconf the text
    try:
        text = read_file(path, "config").decode("utf-8")
        check_toml_text(text)  # before the parser recurses
    except FileRefused as exc:
        raise ConfigError(f"{origin}: config file {exc.reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not valid TOML: the file is not UTF-8 text") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    loader = BaseLoader(
        obj=_LoaderHost(),
        env="_envless",
        identifier="toml",
        extensions=(),  # no source is a file name: the loader parses the text it is given
        file_reader=dynaconf_tomllib.load,
        string_reader=dynaconf_tomllib.loads,
        opener_params={"mode": "rb"},  # unused (no file source) but read from obj otherwise
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = dict(loader.get_source_data([text]).get(text, {}))
        check_depth(data)  # dotted keys nest too: before anything walks the tables
    except dynaconf_tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    return data


def _spec_at(path: Sequence[str]) -> _Spec | None:
    spec: _Spec = SCHEMA
    for part in path:
        if not isinstance(spec, dict) or part not in spec:
            return None
        spec = spec[part]
    return spec


def _env_layer(environ: Mapping[str, str], cwd: Path) -> _Table:
    tree = _Table("environment")
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        raw = environ[name]
        path = [part.lower().replace("_", "-") for part in name[len(ENV_PREFIX) :].split("__")]
        key = _dotted(path)
        spec: _Spec = SCHEMA
        for depth, part in enumerate(path):
            if not isinstance(spec, dict) or part not in spec:
                hint = f" ({_MISPLACED[key]})" if key in _MISPLACED else _suggest(part, spec)
                raise ConfigError(f"{name}: {key}: unknown key{hint}")
            spec = spec[part]
            if isinstance(spec, (_Named, _Array)):
                raise ConfigError(
                    f"{name}: {_dotted(path[: depth + 1])}: cannot be set from the environment; "
                    "write it in a config file"
                )
        if not isinstance(spec, _Leaf):
            raise ConfigError(f"{name}: {key}: is a table; set one of its keys, e.g. {name}__<KEY>")
        value: object = raw
        if spec.kind in _LIST_KINDS:
            try:
                check_toml_text(raw)
                value = tomllib.loads(f"value = {raw}")["value"]
                check_depth(value, 1)  # an array of strings
            except TooDeep:
                raise ConfigError(f"{name}: {key}: expected a flat TOML array such as [\"a\", \"b\"]") from None
            except tomllib.TOMLDecodeError:
                raise ConfigError(f'{name}: {key}: expected a TOML array such as ["a", "b"]') from None
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, _Table(name))
        node[path[-1]] = _Value(value, name, cwd)
    return tree


def flag_name(path: Sequence[str]) -> str:
    """The command-line flag that sets a key: ``--server-addr``, ``--dst-addr``, ..."""
    if len(path) == 4 and path[0] == "client" and path[1] in ("destinations", "sources"):
        return f"--{'dst' if path[1] == 'destinations' else 'src'}-{path[3]}"
    return f"--{path[-1]}"


def _split_flag_key(key: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(key, tuple):
        return key
    for named in ("client.destinations.", "client.sources."):
        if key.startswith(named):
            # the NAME may hold dots: the last part is the key, the rest the name
            name, _, leaf = key[len(named) :].rpartition(".")
            return ("client", named.split(".")[1], name, leaf)
    return tuple(key.split("."))


def _flag_layer(flags: Mapping[str | tuple[str, ...], object], cwd: Path) -> _Table:
    tree = _Table("flags")
    for key, value in flags.items():
        if value is None:
            continue
        path = _split_flag_key(key)
        origin = f"flag {flag_name(path)}"
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, _Table(origin))
        node[path[-1]] = _Value(list(value) if isinstance(value, tuple) else value, origin, cwd)
    return tree

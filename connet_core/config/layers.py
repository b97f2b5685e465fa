"""Layers of a configuration: TOML files (read by the safe reader, checked before parsing),
``CONNET_*`` environment variables and flags, each value kept with its origin."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Mapping, Sequence

from connet_core.config.schema import (
    _LIST_KINDS,
    _MISPLACED,
    SCHEMA,
    _Array,
    _dotted,
    _Leaf,
    _Named,
    _Spec,
    _suggest,
    _Value,
)
from connet_core.config.merge import Table
from connet_core.config.settings import ENV_PREFIX
from connet_core.config_limits import TooDeep, check_depth, check_toml_text
from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file

# --- layers -------------------------------------------------------------------------------

FILES, ENVIRONMENT, FLAGS = 0, 1, 2  # the rank of each layer


def _to_tree(raw: Mapping[str, object], origin: str, base_dir: Path, rank: int = FILES) -> Table:
    """Wrap a parsed TOML mapping: tables stay tables (merged key by key), everything else,
    arrays of tables included, becomes a leaf (replaced whole)."""
    table = Table(origin, rank)
    for key, value in raw.items():
        if isinstance(value, Mapping):
            table[key] = _to_tree(value, origin, base_dir, rank)
        else:
            table[key] = _Value(value, origin, base_dir, rank)
    return table


def file_layer(path: Path) -> Table:
    """One ``--config`` file as a layer; its relative paths are relative to its directory."""
    return _to_tree(read_config_file(path), str(path), path.absolute().parent)


# --- reading the layers ---------------------------------------------------------------------


def read_config_file(path: Path) -> dict[str, object]:
    """The raw mapping of one TOML file. Raises ConfigError naming the file.

    The file is read here by the safe reader (files.py: no FIFO, device or huge file) and its
    text checked for nesting before the TOML parser recurses; dynaconf only ever gets the
    checked data (merge.py), never the path."""
    origin = str(path)
    try:
        text = read_file(path, "config").decode("utf-8")
        check_toml_text(text)  # before the parser recurses
    except FileRefused as exc:
        raise ConfigError(f"{origin}: config file {exc.reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not valid TOML: the file is not UTF-8 text") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    try:
        data = tomllib.loads(text)
        check_depth(data)  # dotted keys nest too: before anything walks the tables
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    except TooDeep as exc:
        raise ConfigError(f"{origin}: not accepted: {exc}") from None
    return data


def _env_layer(environ: Mapping[str, str], cwd: Path, schema: Mapping[str, _Spec] = SCHEMA) -> Table:
    from connet_core.config.plugin_keys import _PluginLeaf, env_part  # (imports schema: not at the top)
    from connet_core.plugin_settings import env_kind_is_toml

    tree = Table("environment", ENVIRONMENT)
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        raw = environ[name]
        path = [part.lower().replace("_", "-") for part in name[len(ENV_PREFIX) :].split("__")]
        spec: _Spec = schema
        for depth, part in enumerate(path):
            if isinstance(spec, dict):
                path[depth] = part = env_part(part, spec)
            key = _dotted(path)
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
        key = _dotted(path)
        value: object = raw
        if isinstance(spec, _PluginLeaf) and env_kind_is_toml(spec.kind):
            # a plugin's integer, number, boolean or array: the variable holds a TOML value
            try:
                check_toml_text(raw)
                value = tomllib.loads(f"value = {raw}")["value"]
                check_depth(value, 1)
            except (TooDeep, tomllib.TOMLDecodeError):
                raise ConfigError(f"{name}: {key}: expected a TOML value of its type "
                                  f"(like 5, 2.5, true or [\"a\", \"b\"])") from None
        elif spec.kind in _LIST_KINDS:
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
            node = node.setdefault(part, Table(name, ENVIRONMENT))
        node[path[-1]] = _Value(value, name, cwd, ENVIRONMENT)
    return tree


def flag_name(path: Sequence[str]) -> str:
    """The command-line flag that sets a key: ``--server-addr``, ``--dst-addr``,
    ``--ip-restriction-allow-cidrs``, ... (config/flags.py derives the daemons' flags by it)."""
    if len(path) == 4 and path[0] == "client" and path[1] in ("destinations", "sources"):
        return f"--{'dst' if path[1] == 'destinations' else 'src'}-{path[3]}"
    # a key of a section is its path inside the section: --server-addr, --ip-restriction-allow-cidrs
    return "--" + "-".join(path[1:] if len(path) > 1 else path)


def _split_flag_key(key: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(key, tuple):
        return key
    for named in ("client.destinations.", "client.sources."):
        if key.startswith(named):
            # the NAME may hold dots: the last part is the key, the rest the name
            name, _, leaf = key[len(named) :].rpartition(".")
            return ("client", named.split(".")[1], name, leaf)
    return tuple(key.split("."))


def _flag_layer(flags: Mapping[str | tuple[str, ...], object], cwd: Path) -> Table:
    tree = Table("flags", FLAGS)
    for key, value in flags.items():
        if value is None:
            continue
        path = _split_flag_key(key)
        origin = f"flag {flag_name(path)}"
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, Table(origin, FLAGS))
        node[path[-1]] = _Value(list(value) if isinstance(value, tuple) else value, origin, cwd, FLAGS)
    return tree

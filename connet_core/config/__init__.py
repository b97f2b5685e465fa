"""Configuration: TOML files (``--config``, repeatable), ``CONNET_*`` environment variables
and flags, layered (docs/configuration.md is the contract) and validated into frozen settings.

The package has one module per job:

- :mod:`.settings`: the frozen dataclasses the daemons get;
- :mod:`.schema`: the schema language, the key tree and the converters (sans-I/O);
- :mod:`.layers`: reading each source (files through the safe reader, ``CONNET_*``
  variables, flags) into a tree whose values keep their origin;
- :mod:`.merge`: layering those trees through a ``Dynaconf`` settings object, keeping the
  documented rules where dynaconf's differ;
- :mod:`.build`: checking the merged tree against the schema and building the settings;
- :mod:`.checks`: opening the files a built configuration names;
- :mod:`.flags`: the daemons' command-line flags, derived from the schema.
"""

from connet_core.config.build import load_config, sections_present
from connet_core.config.checks import check_files
from connet_core.config.layers import flag_name, read_config_file
from connet_core.config.schema import SCHEMA, TOKEN_GROUPS, IPNetwork, _Array, _Leaf, _Named
from connet_core.config.settings import (
    COMMANDS,
    ENV_PREFIX,
    LOG_FORMATS,
    LOG_LEVELS,
    ClientSettings,
    CommonSettings,
    Config,
    ControlSettings,
    EndpointSettings,
    RelaySettings,
    ServerSettings,
)

__all__ = [
    "COMMANDS",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SCHEMA",
    "TOKEN_GROUPS",
    "ClientSettings",
    "CommonSettings",
    "Config",
    "ControlSettings",
    "EndpointSettings",
    "IPNetwork",
    "RelaySettings",
    "ServerSettings",
    "_Array",
    "_Leaf",
    "_Named",
    "check_files",
    "flag_name",
    "load_config",
    "read_config_file",
    "sections_present",
]

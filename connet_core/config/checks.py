"""Opening the files a built configuration names (``connet check`` and startup): certificate
and key, CA bundles, store directories, all through the safe reader; then what the plugins'
settings name (``connet_check_settings`` with ``files=True``: the tokens files)."""

from __future__ import annotations

from pathlib import Path

from connet_core.config.settings import Config
from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file

def _key_origin(config: Config, key: str) -> str:
    return config.sources.get(key, "")


def _prefixed(config: Config, key: str, problem: str) -> ConfigError:
    origin = _key_origin(config, key)
    return ConfigError(f"{origin + ': ' if origin else ''}{key}: {problem}")


def _check_pem_cas(config: Config, key: str, path: Path | None) -> None:
    if path is None:
        return
    from cryptography import x509

    try:
        data = read_file(path, "pem")
    except FileRefused as exc:
        raise _prefixed(config, key, str(exc)) from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _prefixed(config, key, f"{path} holds no PEM certificate") from None


def _check_identity(config: Config, section: str, cert_file: Path, key_file: Path) -> None:
    for key, path in (("cert-file", cert_file), ("key-file", key_file)):
        try:
            read_file(path, "pem")  # the key that names a bad file is the one to blame
        except FileRefused as exc:
            raise _prefixed(config, f"{section}.{key}", str(exc)) from None
    from connet_core.certs import load_identity

    try:
        load_identity(cert_file, key_file)
    except ConfigError as exc:
        origin = _key_origin(config, f"{section}.cert-file")
        raise ConfigError(f"{origin + ': ' if origin else ''}{section}: {exc}") from None


def _check_store_dir(config: Config, key: str, path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise _prefixed(config, key, f"{path} exists and is not a directory")


def check_files(config: Config) -> None:
    """Open what ``config`` names: certificate and key (parsed, and matching), CA bundles,
    store directories, and the plugins' files (tokens files, counted against per-token rules).
    Raises ConfigError with one line naming the key and where it came from."""
    if config.client is not None:
        _check_pem_cas(config, "client.server-cas", config.client.server_cas)
    if config.relay is not None:
        _check_pem_cas(config, "relay.control-cas", config.relay.control_cas)
        _check_store_dir(config, "relay.store-dir", config.relay.store_dir)
    if config.server is not None:
        control = config.server.control
        _check_identity(config, "server", control.cert_file, control.key_file)
        _check_store_dir(config, "server.store-dir", control.store_dir)
    if config.control is not None:
        control = config.control
        _check_identity(config, "control", control.cert_file, control.key_file)
        _check_store_dir(config, "control.store-dir", control.store_dir)
    # the plugins' files (the tokens plugin's tokens files, counted against per-token rules)
    from connet_core.config.build import check_plugin_settings

    check_plugin_settings(config.command, config.common, config.sources, "", files=True)

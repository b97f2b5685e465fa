"""Opening the files a built configuration names (``connet check`` and startup): certificate
and key, CA bundles, tokens files, store directories, all through the safe reader."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from connet_core.config.settings import Config
from connet_core.model import AuthSettings
from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file
from connet_core.token_files import read_tokens_file

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


def _check_tokens_file(config: Config, key: str, auth: AuthSettings | None, rules_key: str | None) -> None:
    if auth is None or auth.tokens.file is None:
        return
    path = auth.tokens.file
    try:
        tokens = read_tokens_file(path)
    except FileRefused as exc:
        raise _prefixed(config, key, str(exc)) from None
    except ValueError as exc:  # a token too long to be presented
        raise _prefixed(config, key, f"{path}: {exc}") from None
    if not tokens:
        raise _prefixed(config, key, f"{path} holds no tokens")
    if len(set(tokens)) != len(tokens):
        raise _prefixed(config, key, f"{path} repeats a token")
    if auth.token_rules is not None and len(auth.token_rules) != len(tokens):
        raise _prefixed(
            config,
            rules_key or key,
            f"{len(auth.token_rules)} per-token restriction(s) for {len(tokens)} token(s) in {path}: "
            "give one per token, in the same order",
        )


def _rules_key(config: Config, section: str, candidates: Sequence[str]) -> str | None:
    return next((f"{section}.{c}" for c in candidates if f"{section}.{c}" in config.sources), None)


def _check_store_dir(config: Config, key: str, path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise _prefixed(config, key, f"{path} exists and is not a directory")


def check_files(config: Config) -> None:
    """Open what ``config`` names: certificate and key (parsed, and matching), CA bundles,
    tokens files (and their count against per-token rules), store directories.
    Raises ConfigError with one line naming the key and where it came from."""
    if config.client is not None:
        _check_pem_cas(config, "client.server-cas", config.client.server_cas)
    if config.relay is not None:
        _check_pem_cas(config, "relay.control-cas", config.relay.control_cas)
        _check_store_dir(config, "relay.store-dir", config.relay.store_dir)
    if config.server is not None:
        control = config.server.control
        _check_identity(config, "server", control.cert_file, control.key_file)
        _check_tokens_file(
            config,
            "server.tokens-file",
            control.client_auth,
            _rules_key(config, "server", ("token-ip-restriction", "token-restriction")),
        )
        _check_store_dir(config, "server.store-dir", control.store_dir)
    if config.control is not None:
        control = config.control
        _check_identity(config, "control", control.cert_file, control.key_file)
        _check_tokens_file(
            config,
            "control.client-tokens-file",
            control.client_auth,
            _rules_key(config, "control", ("client-token-ip-restriction", "client-token-restriction")),
        )
        _check_tokens_file(
            config,
            "control.relay-tokens-file",
            control.relay_auth,
            _rules_key(config, "control", ("relay-token-ip-restriction",)),
        )
        _check_store_dir(config, "control.store-dir", control.store_dir)

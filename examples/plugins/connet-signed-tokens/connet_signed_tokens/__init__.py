"""connet plugin ``signed-tokens``: clients present Ed25519-signed tokens carrying their
claims (a name pattern, a role, an expiry, optionally CIDRs); the server holds only the
public key (``[plugins.signed-tokens] public-key = "FILE"``).

Uses only connet's public plugin API: ``connet_core.hookimpl``, the models in
``connet_core.model`` (``Principal``, ``Veto``) and ``connet_core.plugin_settings``.

- A token of this format that does not verify, or has expired, is vetoed (docs/hooks.md,
  "the veto rule"): no other plugin can accept it. Other tokens are left to other plugins.
- The claims go to connet's ``cidr`` plugin, which refuses an announcement whose name does
  not match the pattern or whose role is not the one signed, and an address outside the
  CIDRs. connet re-checks live sessions every second: a session whose token expires is closed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from connet_core import hookimpl
from connet_core.model import Principal, PrincipalKind, Veto
from connet_core.plugin_settings import PluginKey

from connet_signed_tokens import tokens
from connet_signed_tokens.keys import load_public_key

log = logging.getLogger("connet.signed-tokens")


@hookimpl
def connet_plugin_keys():
    return [PluginKey("public-key", "path", None, "PEM Ed25519 public key that signs the tokens "
                                                  "(connet signed-tokens keygen)")]


@hookimpl
def connet_authenticate(kind, token, plugin_settings):
    if kind is not PrincipalKind.CLIENT or not tokens.is_ours(token):
        return None  # relays, and tokens of other formats, are other plugins' business
    path = plugin_settings.get("public-key")
    if path is None:
        return Veto("a signed token, but [plugins.signed-tokens] public-key is not set")
    try:
        public = load_public_key(Path(path))
    except (OSError, ValueError) as exc:
        return Veto(f"public-key {path}: {exc}")
    try:
        claims = tokens.verify(public, token)
    except tokens.BadToken as exc:
        return Veto(str(exc))
    return Principal(kind, label=f"signed:{claims.sub}", claims=claims.connet_claims())


@hookimpl
def connet_cli_commands():
    from connet_signed_tokens.commands import signed_tokens

    return [signed_tokens]


__all__ = ["connet_authenticate", "connet_cli_commands", "connet_plugin_keys"]

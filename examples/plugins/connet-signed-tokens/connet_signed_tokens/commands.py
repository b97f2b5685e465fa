"""``connet signed-tokens keygen`` and ``connet signed-tokens issue``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from connet_signed_tokens import tokens
from connet_signed_tokens.keys import load_private_key, write_key_pair

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ttl(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.group("signed-tokens")
def signed_tokens() -> None:
    """Keys and tokens for the signed-tokens plugin."""


@signed_tokens.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Directory for signing.key (keep it secret) and signing.pub (for the server).")
def keygen(out: Path) -> None:
    """Write a new Ed25519 key pair."""
    try:
        private, public = write_key_pair(out)
    except FileExistsError:
        raise click.ClickException(f"{out / 'signing.key'} exists already: not overwritten") from None
    click.echo(f"wrote {private} and {public}")


@signed_tokens.command()
@click.option("--key", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              metavar="FILE", help="The private key (signing.key).")
@click.option("--name", required=True, metavar="PATTERN", help="Names the client may announce (a glob: web-*).")
@click.option("--role", type=click.Choice(tokens.ROLES), required=True, help="The role it may announce them as.")
@click.option("--ttl", default="1h", show_default=True, metavar="DURATION", help="Lifetime: 90s, 15m, 1h, 7d.")
@click.option("--cidr", "cidrs", multiple=True, metavar="CIDR", help="Where the client may connect from (repeat).")
@click.option("--subject", default="client", show_default=True, help="Who the token is for (in the server's logs).")
def issue(key: Path, name: str, role: str, ttl: str, cidrs: tuple[str, ...], subject: str) -> None:
    """Print a token carrying these claims."""
    try:
        private = load_private_key(key)
        click.echo(tokens.issue(private, subject, name, role, _ttl(ttl), cidrs))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

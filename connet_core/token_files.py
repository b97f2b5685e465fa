"""The two token file formats, read through the safe reader (files.py) and checked against
the protocol's token length (config_limits.py). Used by the configuration (``connet check``,
startup) and by the tokens plugin when a tokens file changes while a server runs.

- ``token-file``: the token is the first line, stripped.
- ``tokens-file`` (and ``client-tokens-file``, ``relay-tokens-file``): one token per line,
  stripped; blank lines and lines starting with ``#`` are ignored.

Errors never echo a token.
"""

from __future__ import annotations

from pathlib import Path

from connet_core.config_limits import token_problem
from connet_core.files import read_text

__all__ = ["read_token_file", "read_tokens_file"]


def read_token_file(path: Path) -> str:
    """The token of a token file. Raises FileRefused (not a regular file, over 64 KiB, not
    UTF-8) or ValueError (the first line is empty, or the token is too long to send)."""
    lines = read_text(path, "token").splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        raise ValueError("its first line is empty")
    problem = token_problem(first)
    if problem is not None:
        raise ValueError(problem)
    return first


def read_tokens_file(path: Path) -> tuple[str, ...]:
    """The tokens of a tokens file, in order. Raises FileRefused (not a regular file, over
    4 MiB, not UTF-8) or ValueError (a token too long to be presented: ``token N: ...``)."""
    tokens: list[str] = []
    for line in read_text(path, "tokens").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            problem = token_problem(line)
            if problem is not None:
                raise ValueError(f"token {len(tokens) + 1}: {problem}")
            tokens.append(line)
    return tuple(tokens)

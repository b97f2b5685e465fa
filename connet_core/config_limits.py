"""Bounds on configuration input that are checked before anything trusts its shape.

- **Nesting.** Python's TOML parser recurses once per ``[``/``{`` level and the configuration
  code walks tables recursively, so a file with thousands of nested brackets would end in a
  ``RecursionError``; a key of thousands of dotted parts makes the parser build quadratic
  state. :func:`check_toml_text` scans the text (strings and comments skipped, no recursion)
  and refuses more than :data:`MAX_CONFIG_DEPTH` levels of brackets or dotted-key parts,
  *before* parsing; :func:`check_depth` checks a parsed value iteratively before the
  recursive walk. The deepest real configuration is 5 levels
  (``server.token-restriction[i].allow-cidrs[j]``), so the bound costs nothing.
- **Token length.** A token travels in one Authenticate (or RelayRegister) frame of at most
  64 KiB; :func:`token_problem` refuses a token longer than
  :data:`~connet_core.protocol.messages.MAX_TOKEN_BYTES`, which leaves room for the other
  fields. Without it a client would start, then fail to encode its first message forever.
"""

from __future__ import annotations

import re

from connet_core.protocol.messages import MAX_TOKEN_BYTES

__all__ = ["MAX_CONFIG_DEPTH", "MAX_TOKEN_BYTES", "TooDeep", "check_toml_text", "check_depth", "token_problem"]

MAX_CONFIG_DEPTH = 10

# what the scanner stops at: string openers, comments, brackets and key/value separators
_INTERESTING = re.compile(r"[\"'#\[\]{}=,\n.]")
# the end of a basic string: an unescaped quote (escapes are skipped pairwise)
_BASIC_END = re.compile(r'(?:[^"\\\n]|\\.)*"', re.DOTALL)
_ML_BASIC_END = re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""', re.DOTALL)


class TooDeep(ValueError):
    """The input nests deeper than :data:`MAX_CONFIG_DEPTH`; the message says where."""


def check_toml_text(text: str) -> None:
    """Refuse TOML ``text`` whose brackets nest, or whose dotted keys have more parts, than
    :data:`MAX_CONFIG_DEPTH`. Malformed strings are left for the parser to report; this only
    has to be right about text the parser would accept. Raises :class:`TooDeep`."""
    depth = 0
    dots = 0  # dots since the last separator: the parts of a dotted key (a float has one)
    line = 1
    pos = 0
    length = len(text)
    while pos < length:
        match = _INTERESTING.search(text, pos)
        if match is None:
            return
        char = match.group()
        pos = match.end()
        if char == "\n":
            line += 1
            dots = 0
        elif char == "#":
            end = text.find("\n", pos)
            pos = length if end < 0 else end
        elif char in "\"'":
            start = pos
            if text.startswith(char * 2, pos):  # the opener was three quotes: multi-line
                pos += 2
                if char == '"':
                    end_match = _ML_BASIC_END.match(text, pos)
                    pos = length if end_match is None else end_match.end()
                else:
                    end = text.find("'''", pos)
                    pos = length if end < 0 else end + 3
            elif text.startswith(char, pos):  # an empty string
                pos += 1
            elif char == '"':
                end_match = _BASIC_END.match(text, pos)
                pos = length if end_match is None else end_match.end()
            else:
                end = text.find("'", pos)
                pos = length if end < 0 else end + 1
            line += text.count("\n", start, pos)
        elif char == ".":
            dots += 1
            if dots >= MAX_CONFIG_DEPTH:
                raise TooDeep(f"line {line}: a dotted key of more than {MAX_CONFIG_DEPTH} parts")
        elif char in "[{":
            depth += 1
            dots = 0
            if depth > MAX_CONFIG_DEPTH:
                raise TooDeep(f"line {line}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        else:  # ] } = ,
            if char in "]}":
                depth = max(0, depth - 1)
            dots = 0


def check_depth(value: object, limit: int = MAX_CONFIG_DEPTH) -> None:
    """Refuse a parsed value (dicts and lists) nested deeper than ``limit``, iteratively.
    Raises :class:`TooDeep`."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: object = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise TooDeep(f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))  # type: ignore[attr-defined]


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be sent (too long, or not encodable), or None. Never echoes it."""
    try:
        size = len(token.encode("utf-8"))
    except UnicodeEncodeError:
        return "the token is not valid Unicode text"
    if size > MAX_TOKEN_BYTES:
        return (
            f"the token is {size} bytes long; the longest that fits the protocol's "
            f"Authenticate message is {MAX_TOKEN_BYTES}"
        )
    return None

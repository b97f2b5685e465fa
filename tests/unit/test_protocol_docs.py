"""docs/protocol.md must agree with the code: the close-code table and the message tags."""

from __future__ import annotations

import re
from pathlib import Path

from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import MESSAGE_TYPES, NESTED_TYPES

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TABLE_RE = re.compile(r"<!-- close-codes:begin -->\n(.*?)<!-- close-codes:end -->", re.S)
ROW_RE = re.compile(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|", re.M)


def expected_table() -> str:
    """The table as it should read, meanings taken from the comments in codes.py."""
    source = (Path(__file__).resolve().parents[2] / "connet_core" / "protocol" / "codes.py").read_text()
    meanings = dict(re.findall(r"^\s+([A-Z_]+) = \d+\s*#\s*(.*)$", source, re.M))
    rows = [f"| {c.value} | `{CloseCode.describe(c)}` | {meanings.get(c.name, '')} |" for c in CloseCode]
    return "\n".join(["| code | name | meaning |", "|-----:|------|---------|", *rows])


def test_close_code_table_matches_close_code() -> None:
    match = TABLE_RE.search(PROTOCOL_MD.read_text())
    assert match, "docs/protocol.md lost its <!-- close-codes:begin/end --> markers"
    documented = [(int(code), name) for code, name in ROW_RE.findall(match.group(1))]
    actual = [(c.value, CloseCode.describe(c)) for c in CloseCode]
    assert documented == actual, "docs/protocol.md close codes are stale; the table should read:\n" + expected_table()


def test_every_message_tag_is_documented() -> None:
    text = PROTOCOL_MD.read_text()
    for tag, cls in [*MESSAGE_TYPES.items(), *NESTED_TYPES.items()]:
        assert re.search(rf"\| `{re.escape(tag)}`\s*\| `{cls.__name__}`", text), f"{tag} ({cls.__name__}) is not in docs/protocol.md"

"""Docs that run (issue 18): every shell block of README.md and docs/ a user would paste is
either run by a test (a ``<!-- run by tests/... -->`` line right above it, naming a test that
reads that file) or says why it is not run here (``<!-- not run by the tests: why -->``).
docs/hooks.md's last example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)  # ```python title="..." too
SHELL = {"sh", "console", "bash", "shell"}
# an unlabeled block that starts like a command is a shell block too: label it
COMMAND = re.compile(r"^(\$ |python3? |pip |eval |docker |podman |curl |nix |systemctl |connet [a-z-]+ )")
MARK = re.compile(r"^<!-- (run by (tests/\S+?\.py)|not run by the tests: \S.*) -->$")


def _blocks(path: Path) -> list[tuple[int, str, str, str]]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text[: match.start()].count("\n") + 1
        before = text[: match.start()].rstrip("\n").splitlines()[-1] if line > 1 else ""
        found.append((line, match.group(1), match.group(2), before))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_shell_block_is_run_or_says_why_not(path: Path) -> None:
    for line, lang, body, before in _blocks(path):
        first = body.lstrip().splitlines()[0] if body.strip() else ""
        if lang == "" and COMMAND.match(first):
            pytest.fail(f"{path.name}:{line}: a block of commands without a language: write ```sh")
        if lang not in SHELL:
            continue
        mark = MARK.match(before)
        assert mark, (f"{path.name}:{line}: a shell block needs a line right above it: "
                      "<!-- run by tests/....py --> or <!-- not run by the tests: why -->")
        if mark.group(2):
            test = ROOT / mark.group(2)
            assert test.is_file(), f"{path.name}:{line}: {mark.group(2)} does not exist"
            assert path.name in test.read_text(), f"{mark.group(2)} does not read {path.name}"


def test_the_last_example_of_the_hooks_page_runs() -> None:
    blocks = [body for _, lang, body, _ in _blocks(ROOT / "docs" / "hooks.md") if lang == "python"]
    namespace: dict[str, object] = {}
    exec(compile(blocks[-1], "docs/hooks.md (last example)", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["transport"].name == "memory"  # type: ignore[attr-defined]

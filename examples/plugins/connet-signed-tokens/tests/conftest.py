"""Fixtures for the plugin's tests (helpers in signed_tokens_support.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pytest

from signed_tokens_support import CONNET, Daemon


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, saying why, when the plugin is not installed; in CI (PLUGINS_REQUIRED=1) fail."""
    if any(ep.name == "signed-tokens" for ep in metadata.entry_points(group="connet")):
        return
    reason = "connet-signed-tokens is not installed (pip install ./examples/plugins/connet-signed-tokens)"
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            if os.environ.get("PLUGINS_REQUIRED") == "1":
                raise pytest.UsageError(f"PLUGINS_REQUIRED=1 but {reason}")
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([*CONNET, "cert", "--out", str(out), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    return out



"""Deployment tests: the container image, the systemd units, the Nix files, the release
artifacts and the documentation site. Each needs a tool (podman, systemd-analyze,
nix-instantiate, mkdocs, the build frontend) that a developer's machine may lack: without it
the test skips with the reason, and with DEPLOY_REQUIRED=1 (set by .ci/run) the skip
becomes a failure, so CI cannot pass by skipping. (Not CONNET_DEPLOY_REQUIRED: connet
refuses unknown CONNET_* variables, and every daemon a test starts inherits the environment.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the same daemons and test certificates as the end-to-end tests
from e2e.conftest import certs, daemons, pytest_runtest_makereport  # noqa: F401 - fixtures re-exported

ROOT = Path(__file__).resolve().parents[2]


def require(reason: str | None) -> None:
    """Skip (or fail, in CI) when ``reason`` says a prerequisite is missing."""
    if reason is None:
        return
    if os.environ.get("DEPLOY_REQUIRED") == "1":
        pytest.fail(f"DEPLOY_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


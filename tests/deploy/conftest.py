"""Deployment tests: the container image, the systemd units, the Nix files, the release
artifacts and the documentation site. Each needs a tool (podman, systemd-analyze,
nix-instantiate, mkdocs, the build frontend) that a developer's machine may lack: without it
the test skips with the reason, and with DEPLOY_REQUIRED=1 (set by .ci/run) the skip
becomes a failure, so CI cannot pass by skipping. (Not CONNET_DEPLOY_REQUIRED: connet
refuses unknown CONNET_* variables, and every daemon a test starts inherits the environment.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support.daemons import CONNET, Daemons

ROOT = Path(__file__).resolve().parents[2]


def require(reason: str | None) -> None:
    """Skip (or fail, in CI) when ``reason`` says a prerequisite is missing."""
    if reason is None:
        return
    if os.environ.get("DEPLOY_REQUIRED") == "1":
        pytest.fail(f"DEPLOY_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([*CONNET, "cert", "--out", str(out), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    return out


@pytest.fixture
def daemons(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemons]:
    ds = Daemons(tmp_path)
    yield ds
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        sys.stderr.write(ds.dump())
    ds.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report

"""Fixtures for end-to-end tests: real ``connet`` processes on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from support.cluster import ServerInfo, start_server
from support.daemons import CONNET, Daemons


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
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        sys.stderr.write(ds.dump())
    ds.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def server(daemons: Daemons, certs: Path) -> ServerInfo:
    return start_server(daemons, certs)



"""Fixtures for end-to-end tests: real ``connet`` processes on loopback."""

from __future__ import annotations

import importlib.util
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


TRANSPORTS = ["aioquic", "qh3"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Once per QUIC library: CONNET_TRANSPORT is the root key `transport`, and every daemon
    the test starts (server, relay, clients) inherits it from the environment."""
    if request.param == "qh3" and importlib.util.find_spec("qh3") is None:
        pytest.skip("qh3 is not installed")
    monkeypatch.setenv("CONNET_TRANSPORT", request.param)
    yield request.param


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



"""Fixtures for the NAT lab: skip (or, with NATLAB_REQUIRED=1, fail) when the machine cannot
make namespaces; sweep a crashed run's leftovers; one lab per test, always torn down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Iterator

import pytest

from natlab.lab import SERVER_IP, Lab, missing_prerequisite, sweep_stale
from support.daemons import CONNET


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def natlab_ready() -> Iterator[None]:
    reason = missing_prerequisite()
    if reason is not None:
        if os.environ.get("NATLAB_REQUIRED") == "1":
            pytest.fail(f"NATLAB_REQUIRED=1 but the NAT lab cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    removed = sweep_stale()
    if removed:
        sys.stderr.write(f"natlab: removed stale namespaces of crashed runs: {' '.join(removed)}\n")
    # A CI timeout sends SIGTERM, which would end pytest without fixture teardown: turn it into
    # KeyboardInterrupt, after which pytest still tears the fixtures (the lab) down.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def lab_certs(natlab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("natlab-certs")
    subprocess.run([*CONNET, "cert", "--out", str(out), "--host", SERVER_IP], check=True, capture_output=True)
    return out


@pytest.fixture
def lab(lab_certs: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    instance = Lab(tmp_path, lab_certs)
    try:
        yield instance
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            # the evidence must be read before teardown deletes the namespaces
            sys.stderr.write(f"\n===== natlab evidence for {request.node.nodeid} =====\n{instance.evidence()}\n")
        instance.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report

"""Fixtures for the security tests: the e2e fixtures (``certs``, ``daemons``, ``server``) reused,
plus a check after every test that no daemon ever logged a token."""

from __future__ import annotations

from typing import Iterator

import pytest

from e2e.conftest import certs, daemons, pytest_runtest_makereport, server  # noqa: F401 - fixtures re-exported
from secsupport import TOKENS_IN_PLAY
from support.daemons import Daemons


@pytest.fixture(autouse=True)
def no_token_in_any_log(daemons: Daemons) -> Iterator[None]:  # noqa: F811
    """Every daemon of every security test runs at debug level: none may print a token."""
    yield
    for daemon in daemons.started:
        text = daemon.log()
        leaked = [token for token in TOKENS_IN_PLAY if token in text]
        assert not leaked, f"{daemon.name} logged token(s) {leaked}"

"""Real programs the tests use (Debian packages installed by .ci/run).

A test that needs one calls :func:`need_program`: on a machine without it the test skips with
the package to install, and with PROGRAMS_REQUIRED=1 (set by .ci/run) the skip becomes a
failure, so CI cannot pass by skipping. (Not CONNET_PROGRAMS_REQUIRED: connet refuses unknown
CONNET_* variables, and every daemon inherits the environment.)
"""

from __future__ import annotations

import os
import shutil

import pytest

# program -> the Debian package that has it
PACKAGES = {
    "nginx": "nginx-light",
    "dnsmasq": "dnsmasq-base",
    "dig": "dnsutils",
    "iperf3": "iperf3",
    "redis-server": "redis-server",
    "miniupnpd": "miniupnpd",
    "upnpc": "miniupnpc",
    "sshd": "openssh-server",
}


def need_program(name: str) -> str:
    """The program's path; skips (fails under PROGRAMS_REQUIRED=1) when it is not installed."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        reason = f"{name} is not installed (apt-get install {PACKAGES.get(name, name)})"
        if os.environ.get("PROGRAMS_REQUIRED") == "1":
            pytest.fail(f"PROGRAMS_REQUIRED=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return path

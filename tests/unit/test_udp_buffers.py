"""UDP socket buffers: what the kernel granted is read back, and a shortfall is said once.

The kernel caps SO_RCVBUF/SO_SNDBUF at net.core.rmem_max/wmem_max without an error; a process
with CAP_NET_ADMIN may go past them (the FORCE options). These tests ask for twice the
machine's current caps, so they hold whatever the caps are here."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sysctls and FORCE options are Linux's")


def cap(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


# runs in a child process: the warning is once per process, and capabilities are per process
PROBE = """
import json, logging, socket, sys
records = []
class Keep(logging.Handler):
    def emit(self, record): records.append(record)
logging.getLogger("connet.quic").addHandler(Keep())
from connet_quic._udp import size_buffers
wanted = int(sys.argv[1])
grants = [size_buffers(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), wanted) for _ in range(3)]
warnings = [r for r in records if r.levelname == "WARNING"]
print(json.dumps({"grants": grants, "warnings": [r.getMessage() for r in warnings],
                  "fields": [getattr(r, "rmem_max", None) for r in warnings]}))
"""


def probe(wanted: int, *prefix: str) -> dict:
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(wanted)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop CAP_NET_ADMIN")
def test_a_capped_buffer_logs_one_warning_that_names_the_sysctls() -> None:
    rmem, wmem = cap("rmem_max"), cap("wmem_max")
    wanted = 2 * max(rmem, wmem)
    # without CAP_NET_ADMIN the caps hold: what the kernel granted is what the sysctls allow
    seen = probe(wanted, "setpriv", "--bounding-set", "-net_admin")
    assert seen["grants"] == [{"net.core.rmem_max": rmem, "net.core.wmem_max": wmem}] * 3
    (message,) = seen["warnings"]  # three sockets, one warning per process
    assert f"sysctl -w net.core.rmem_max={wanted} net.core.wmem_max={wanted}" in message
    assert f"net.core.rmem_max allows {rmem}" in message
    assert seen["fields"] == [rmem]


def test_enough_buffer_is_silent() -> None:
    wanted = min(cap("rmem_max"), cap("wmem_max"))
    seen = probe(wanted)
    assert seen["warnings"] == []
    assert seen["grants"][0] == {"net.core.rmem_max": wanted, "net.core.wmem_max": wanted}


@pytest.mark.skipif(os.geteuid() != 0, reason="forcing past the caps needs CAP_NET_ADMIN")
def test_with_cap_net_admin_the_buffers_go_past_the_caps() -> None:
    wanted = 2 * max(cap("rmem_max"), cap("wmem_max"))
    seen = probe(wanted)
    assert seen["warnings"] == []
    assert seen["grants"][0] == {"net.core.rmem_max": wanted, "net.core.wmem_max": wanted}


"""The image's health check (packaging/container/healthcheck.py), run against real daemons on
the host: it finds the status endpoint from the daemon's own command line, environment and
config files, passes without one, and fails when the endpoint does not answer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from deploy.conftest import ROOT
from support.cluster import TOKENS, write_server_config
from support.daemons import Daemons

HEALTHCHECK = ROOT / "packaging" / "container" / "healthcheck.py"


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check(pid: int) -> tuple[int, str]:
    result = subprocess.run([sys.executable, str(HEALTHCHECK), str(pid)], capture_output=True, text=True, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.strip()


def test_healthy_with_and_without_a_status_endpoint_unhealthy_when_it_hangs(
    daemons: Daemons, certs: Path, tmp_path: Path
) -> None:
    status_port = _free_tcp_port()
    config = write_server_config(tmp_path / "server.toml", certs)
    # the status address from the environment, the rest from the file: both are read
    server = daemons.start("server", ["server", "--config", config.name],
                           env={"CONNET_SERVER__STATUS_ADDR": f"127.0.0.1:{status_port}"})
    control_port = int(server.wait_for(r"listening control udp 127\.0\.0\.1:(\d+)").group(1))
    server.wait_for(rf"listening status tcp 127\.0\.0\.1:{status_port}")
    assert _check(server.proc.pid) == (0, f"healthy: http://127.0.0.1:{status_port}/ answered as server")

    client_args = ["--token", TOKENS[0], "--server-addr", f"127.0.0.1:{control_port}", "--server-cas",
                   str(certs / "ca.pem"), "--direct-addr", "127.0.0.1:0", "--dst-name", "web", "--dst-addr",
                   "127.0.0.1:9"]
    plain = daemons.start("plain", client_args)
    plain.wait_for(r"listening direct udp")
    assert _check(plain.proc.pid) == (0, "healthy: no status endpoint configured")

    client_status = _free_tcp_port()
    watched = daemons.start("watched", [*client_args, "--status-addr", f"127.0.0.1:{client_status}"])
    watched.wait_for(rf"listening status tcp 127\.0\.0\.1:{client_status}")
    assert _check(watched.proc.pid) == (0, f"healthy: http://127.0.0.1:{client_status}/ answered as client")

    os.kill(server.proc.pid, signal.SIGSTOP)  # a hung daemon: its endpoint accepts nothing more
    try:
        code, line = _check(server.proc.pid)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert code == 1 and line.startswith(f"unhealthy: http://127.0.0.1:{status_port}/"), line

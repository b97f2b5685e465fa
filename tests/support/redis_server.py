"""A real redis-server for the tests: on a free loopback port, nothing saved, in a tmp dir;
and a tiny TCP proxy per control instance, so one instance can be cut off from Redis
(SIGSTOP the proxy: its connections stall like a partition) while the others are not."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.programs import need_program


def need_redis_client() -> None:
    """The redis plugin's client (the extra connet[redis]): skips without it, and fails under
    PLUGINS_REQUIRED=1 (CI installs the extras), so CI cannot pass by skipping."""
    if importlib.util.find_spec("redis") is None:
        reason = "the redis package is not installed (pip install 'connet[redis]')"
        if os.environ.get("PLUGINS_REQUIRED") == "1":
            pytest.fail(f"PLUGINS_REQUIRED=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on port {port}")


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        need_redis_client()
        self.program = need_program("redis-server")
        self.workdir = workdir
        self.port = free_tcp_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Killed and started again on the same port: everything it held is gone."""
        self.stop()
        self.start()


PROXY = Path(__file__).with_name("tcp_proxy.py")


class TcpProxy:
    """``127.0.0.1:port`` forwarding to ``target_port``; ``pause`` stalls it (SIGSTOP)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_tcp_port()
        self.proc = subprocess.Popen([sys.executable, str(PROXY), str(self.port), str(target_port)],
                                     stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "tcp proxy")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

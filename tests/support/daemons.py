"""Real ``connet`` processes for end-to-end tests.

Each daemon's stderr is read by a thread into a list of lines; tests wait on lines (the
``listening <role> <proto> <addr>`` line tells the real port of a port-0 bind), never sleep.
Every process is killed at fixture teardown, also when a test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

CONNET = [sys.executable, "-m", "connet_core.cli"]
LISTENING = re.compile(r"listening (\S+) (udp|tcp) (\S+)")


class Daemon:
    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 command: Sequence[str] = CONNET):
        self.name = name
        self.args = [*command, *args]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=full_env, cwd=cwd, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 15.0, *, start: int = 0, count: int = 1) -> re.Match:
        """The ``count``-th log line from index ``start`` on that matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        count -= 1
                        if not count:
                            return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{self.name}: no log line matching {pattern!r} within {timeout}s "
                        f"(exit code {self.proc.poll()}); log:\n" + "\n".join(self.lines[-40:])
                    )
                self._cond.wait(remaining)

    def mark(self) -> int:
        """An index to pass as ``start`` so only later lines count."""
        with self._cond:
            return len(self.lines)

    def listening(self, role: str, proto: str = "udp", timeout: float = 15.0) -> tuple[str, int]:
        match = self.wait_for(rf"listening {role} {proto} (\S+)", timeout)
        addr = match.group(1)
        host, _, port = addr.rpartition(":")
        return host.strip("[]"), int(port)

    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s after signal {sig}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


class Daemons:
    """Owns every daemon a test starts; ``close`` kills what is still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Daemon] = []

    def start(self, name: str, args: Sequence[str], **kwargs) -> Daemon:
        daemon = Daemon(name, args, cwd=self.workdir, **kwargs)
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            daemon.kill()

    def dump(self) -> str:
        return "\n\n".join(f"--- {d.name} ---\n{d.log()}" for d in self.started)

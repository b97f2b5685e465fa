"""Real ``connet`` processes on loopback, driven only through connet's command line (the
public interface), as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

CONNET = [sys.executable, "-m", "connet_core.cli"]


class Daemon:
    """One ``connet`` process; its output read by a thread into lines tests wait on."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen([*CONNET, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; log:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(left)

    def count(self, pattern: str, start: int = 0) -> int:
        with self._cond:
            return sum(1 for line in self.lines[start:] if re.search(pattern, line))

    def port(self, role: str, proto: str) -> int:
        return int(self.wait_for(rf"listening {role} {proto} \S+:(\d+)").group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONNET, *args], capture_output=True, text=True, timeout=60)

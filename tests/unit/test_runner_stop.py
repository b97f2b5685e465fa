"""The runner's backstop: a component that does not stop on SIGTERM is ended SHUTDOWN_GRACE
after the signal with one line and exit code 1 (a real process: the backstop is os._exit)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from connet_core.runner import SHUTDOWN_GRACE

STUBBORN = """
import asyncio, os, signal
from connet_core import runner

class Stubborn:
    async def run(self):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("ignoring the stop", flush=True)  # the bug the backstop is for

    def status(self):
        return {}

async def main():
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
    await runner.serve(Stubborn())

asyncio.run(main())
"""


def test_a_component_that_ignores_the_stop_is_ended_after_the_grace(tmp_path) -> None:
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", STUBBORN], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=tmp_path)
    except subprocess.TimeoutExpired:  # (run() killed it)
        raise AssertionError("a component that ignores SIGTERM kept the process alive for 30 s") from None
    took = time.monotonic() - started
    assert done.returncode == 1, done
    assert "ignoring the stop" in done.stdout
    assert f"still stopping {SHUTDOWN_GRACE:.1f} s after the signal: exiting now" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert took >= SHUTDOWN_GRACE

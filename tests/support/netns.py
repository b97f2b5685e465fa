"""A private network namespace for a test: its own loopback, nftables and processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

NETTOOL = Path(__file__).with_name("nettool.py")


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command (iproute2, nftables)"
    probe = f"cnprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(), *args], check=check, capture_output=True, text=True)

    def nft(self, script: str) -> None:
        result = subprocess.run([*self.prefix(), "nft", "-f", "-"], input=script, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"nft failed: {result.stderr}\n{script}")

    def send(self, port: int, size: int, timeout: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(), sys.executable, str(NETTOOL), "send", str(port), str(size), str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 10)

    def delete(self) -> None:
        # processes inside were killed by their owners first; deleting the name frees the rest
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

"""Docs that run: README.md's "Using it" block, extracted from the file and run in order in a
fresh directory holding a copy of examples/ (as a fresh clone has it). Only the ports change:
each default port becomes a free one, in the commands and in the copied files, since other
tests run on this machine at the same time."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from support.daemons import CONNET, Daemons
from support.services import http_server

ROOT = Path(__file__).resolve().parents[2]
UDP_PORTS = (19190, 19191, 19192, 19193)
TCP_PORTS = (19180, 19181, 19182, 19183, 8080, 9000)


def shell_block(markdown: str, heading: str) -> list[str]:
    """The commands of the first ```sh block under ``heading``, comments and blanks dropped."""
    section = markdown.split(f"\n{heading}\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"no sh block under {heading}"
    commands = []
    for line in block.group(1).splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command:
            commands.append(command)
    return commands


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("0.0.0.0" if kind == socket.SOCK_DGRAM else "127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_readme_using_it_block_runs_in_a_fresh_directory(daemons: Daemons, tmp_path: Path) -> None:
    commands = shell_block((ROOT / "README.md").read_text(), "## Using it")
    assert [c.split()[0] for c in commands] == ["connet"] * 5 + ["curl"], commands
    fresh = tmp_path / "fresh"
    shutil.copytree(ROOT / "examples", fresh / "examples", ignore=shutil.ignore_patterns("certs", "state"))
    site = tmp_path / "site"
    site.mkdir()
    page = os.urandom(2048).hex()
    (site / "index.html").write_text(page)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with http_server(str(site)) as http_port:
        ports = {p: free_port(socket.SOCK_DGRAM) for p in UDP_PORTS}
        ports.update({p: free_port(socket.SOCK_STREAM) for p in TCP_PORTS})
        ports[8080] = http_port  # the service the destination exposes (localhost:8080 in the file)
        pattern = re.compile(r":(%s)\b" % "|".join(map(str, ports)))

        def substitute(text: str) -> str:
            return pattern.sub(lambda m: f":{ports[int(m.group(1))]}", text)

        for toml in (fresh / "examples").glob("*.toml"):
            toml.write_text(substitute(toml.read_text()))
        started = []
        for command in commands:
            argv = shlex.split(substitute(command))
            if argv[0] == "curl":
                started[-1].wait_for(r"peer \S+ connected direct", 20)
                body = _fetch(argv)
                assert hashlib.sha256(body).hexdigest() == hashlib.sha256(page.encode()).hexdigest()
                continue
            argv = [*CONNET, *argv[1:]]
            if argv[len(CONNET)] in ("cert", "check"):
                done = subprocess.run(argv, cwd=fresh, env=env, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
                continue
            daemons.workdir = fresh  # daemons start in the fresh directory, as the user's shell
            started.append(daemons.start(f"step{len(started)}", argv[len(CONNET):], env={"TMPDIR": str(tmp_path)}))
        for daemon in started:
            assert daemon.proc.poll() is None, daemon.log()
        for daemon in reversed(started):
            assert daemon.stop() == 0, daemon.log()


def _fetch(argv: list[str]) -> bytes:
    """``curl URL`` as written: with curl when installed, else the same GET with urllib."""
    url = argv[-1]
    deadline = time.monotonic() + 15
    while True:
        if shutil.which("curl"):
            done = subprocess.run(["curl", "-sS", "--fail", url], capture_output=True, timeout=20)
            if done.returncode == 0:
                return done.stdout
        else:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return response.read()
            except OSError:
                pass
        assert time.monotonic() < deadline, f"{' '.join(argv)} did not answer"
        time.sleep(0.2)

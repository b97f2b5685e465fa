"""docs/hooks.md opens with a tutorial: its files are extracted from the page, the package is
installed with pip (into a directory of its own, not this venv) and the steps are run with
real ``connet`` processes, so the tutorial cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
FENCE = re.compile(r'^```(\w+) title="([^"]+)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)
CONNET = [sys.executable, "-m", "connet_core.cli"]


def tutorial_files() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Tutorial"):text.index("Two kinds of hook:")]
    return {title: body for _, title, body in FENCE.findall(section)}


def test_the_tutorial_is_found_and_comes_first():
    text = DOC.read_text(encoding="utf-8")
    assert text.index("## Tutorial") < text.index("## connet_")
    assert set(tutorial_files()) == {"ok_prefix/__init__.py", "pyproject.toml", "server.toml"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The tutorial's package, pip-installed into a target directory put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("tutorial")
    package = root / "connet-ok-prefix"
    for name, body in tutorial_files().items():
        if name != "server.toml":
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            (package / name).write_text(body)
    (root / "server.toml").write_text(tutorial_files()["server.toml"])
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(site), str(package)], check=True, capture_output=True, timeout=300)
    subprocess.run([*CONNET, "cert", "--out", str(root / "certs"), "--host", "127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    path = os.environ.get("PYTHONPATH", "")
    return root, {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{path}" if path else str(site)}


def test_connet_check_accepts_the_tutorials_config_and_refuses_a_misspelled_key(installed):
    root, env = installed
    ok = subprocess.run([*CONNET, "check", "--config", "server.toml"], cwd=root, env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = root / "bad.toml"
    bad.write_text((root / "server.toml").read_text().replace("prefix =", "prefx ="))
    refused = subprocess.run([*CONNET, "check", "--config", "bad.toml"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("connet: error: bad.toml: plugins.ok-prefix.prefx: unknown key "
                                      "(did you mean prefix?)")


class Output:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match:
        with self.cond:
            found = None

            def seen() -> bool:
                nonlocal found
                found = next((m for m in map(re.compile(pattern).search, self.lines) if m), None)
                return found is not None

            assert self.cond.wait_for(seen, timeout), f"no {pattern!r} in:\n{''.join(self.lines)}"
            return found  # type: ignore[return-value]


def test_the_tutorials_server_accepts_the_prefix_and_vetoes_the_rest(installed):
    root, env = installed
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> Output:
        proc = subprocess.Popen([*CONNET, *args], cwd=root, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(proc)
        return Output(proc)

    try:
        server = start("server", "--config", "server.toml")
        port = server.wait_for(r"listening control udp 127\.0\.0\.1:(\d+)").group(1)
        client = ["--server-addr", f"127.0.0.1:{port}", "--server-cas", "certs/ca.pem", "--direct-addr", "127.0.0.1:0"]
        start("--token", "bob", *client)
        server.wait_for(r"client \S+ refused: plugin 'ok-prefix' vetoed the token: token does not start with 'ok-'")
        start("--token", "ok-alice", *client)
        server.wait_for(r"client \S+ connected \(token#0\)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

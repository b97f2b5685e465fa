"""Release artifacts: ``python -m build`` makes an sdist and a wheel of a clean copy of the
tree; the wheel, installed (not editable) into a new venv, runs examples/demo.py, which
carries a page through a tunnel between real processes of that venv; the signed-tokens example
plugin, installed beside it from its folder, adds its commands and its settings to that connet."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from deploy.conftest import ROOT, require

# what a checkout has that is no part of a release (a venv, caches, build output)
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                ".hypothesis")


def _clean_env() -> dict[str, str]:
    """The environment without anything that points Python at this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def test_the_demo_imports_only_the_standard_library() -> None:
    """So that, run from the source tree, it still uses the installed connet (its daemons
    are ``python -m connet_core.cli`` of the interpreter that runs it)."""
    tree = ast.parse((ROOT / "examples" / "demo.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.partition(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_the_built_wheel_runs_the_demo_from_a_clean_venv(tmp_path: Path) -> None:
    require(None if importlib.util.find_spec("build") else "the build frontend is missing (pip install build)")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=IGNORE)
    dist = tmp_path / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], capture_output=True,
                            text=True, env=_clean_env(), timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = dist.glob("connet-*.tar.gz")
    (wheel,) = dist.glob("connet-*.whl")
    print(f"\nsdist {sdist.name}: {sdist.stat().st_size // 1024} KiB, wheel {wheel.name}: {wheel.stat().st_size // 1024} KiB")

    with zipfile.ZipFile(wheel) as archive:
        top = {name.partition("/")[0] for name in archive.namelist()}
    for package in ("connet_core", "connet_quic", "connet_tokens", "connet_cidr", "connet_routes",
                    "connet_filestore", "connet_tui"):
        assert package in top, f"{package} is not in the wheel"
    assert not top & {"tests", "examples", "docs"}, top
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(name.endswith("/pyproject.toml") for name in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             env=_clean_env(), timeout=400)
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import connet_core; print(connet_core.__file__)"], capture_output=True,
                           text=True, env=_clean_env(), cwd=tmp_path, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    demo = subprocess.run([str(python), str(ROOT / "examples" / "demo.py")], capture_output=True, text=True,
                          env=_clean_env(), cwd=tmp_path, timeout=120)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "<h1>Hello from behind the NAT, through connet!</h1>" in demo.stdout, demo.stdout[-3000:]
    assert "Traceback" not in demo.stdout + demo.stderr

    # a third-party plugin from its own folder into the same venv, found only by its entry
    # point: its commands make keys and a token, and a server with no token list checks clean
    plugin = ROOT / "examples" / "plugins" / "connet-signed-tokens"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(plugin)], capture_output=True, text=True,
                             env=_clean_env(), cwd=tmp_path, timeout=400)
    assert install.returncode == 0, install.stderr[-3000:]
    connet = venv / "bin" / "connet"
    keys = tmp_path / "keys"
    made = subprocess.run([str(connet), "signed-tokens", "keygen", "--out", str(keys)], capture_output=True,
                          text=True, env=_clean_env(), cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    token = subprocess.run([str(connet), "signed-tokens", "issue", "--key", str(keys / "signing.key"), "--name",
                            "web-*", "--role", "destination", "--ttl", "1h"], capture_output=True, text=True,
                           env=_clean_env(), cwd=tmp_path, timeout=60)
    assert token.returncode == 0 and token.stdout.strip(), token.stderr
    certs = subprocess.run([str(connet), "cert", "--out", str(tmp_path / "certs")], capture_output=True, text=True,
                           env=_clean_env(), cwd=tmp_path, timeout=60)
    assert certs.returncode == 0, certs.stderr
    config = tmp_path / "server.toml"
    config.write_text('disable-plugins = ["tokens"]\n[server]\n'
                      f'cert-file = "{tmp_path / "certs" / "server.pem"}"\n'
                      f'key-file = "{tmp_path / "certs" / "server-key.pem"}"\n'
                      f'[plugins.signed-tokens]\npublic-key = "{keys / "signing.pub"}"\n')
    check = subprocess.run([str(connet), "check", "--config", str(config)], capture_output=True, text=True,
                           env=_clean_env(), cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

"""podman for the deployment tests: one image build per test session, containers that are
always removed, and the build-time pip settings of the machine the tests run on.

podman runs here as root without a systemd or a registry: the vfs storage driver and runc
work everywhere (crun cannot set rlimits in some sandboxes), limits are lowered below the
hard ones (equal ones are refused), and the base image is a local one (see .ci/run).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = "localhost/debian-python:bookworm"
GLOBAL = ["--runtime", "runc", "--storage-driver=vfs"]
ULIMITS = ["--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:4096"]
IMAGE_UID = 10001  # the Dockerfile's connet user


def podman(*args: str, check: bool = True, timeout: float = 120, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *GLOBAL, *args], check=check, timeout=timeout, text=True,
                          capture_output=capture, stdin=subprocess.DEVNULL)


def missing_prerequisite(base: str) -> str | None:
    """Why the container tests cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    if shutil.which("runc") is None:
        return "runc is not installed (apt-get install runc)"
    if podman("image", "exists", base, check=False).returncode != 0:
        return f"base image {base} is missing (make it as .ci/run does, with debootstrap)"
    return None


def _pip_config_files() -> list[Path]:
    """The configuration files pip reads here (``pip config debug`` lists them): this
    interpreter's pip, since a system python3 may have none."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True,
                         timeout=60).stdout
    files = []
    for line in out.splitlines():
        line = line.strip()
        if line.endswith("exists: True"):
            files.append(Path(line.split(",", 1)[0]))
    return files


def _paths_in(value: str) -> list[Path]:
    """Local paths a pip setting names: plain absolute paths and file:// URLs, space separated.
    A local index ``.../simple`` links to its files relatively (``../../files/...``): the
    directory above it goes in whole."""
    found = []
    for word in value.split():
        url = word.startswith("file://")
        word = word.removeprefix("file://")
        if word.startswith("/") and os.path.exists(word):
            path = Path(word)
            found.append(path.parent if url and path.name == "simple" else path)
    return found


def pip_build_options() -> list[str]:
    """``-v FILE:FILE:ro`` for every pip configuration file and every path those files and the
    ``PIP_*`` variables name, and ``--build-arg NAME`` for every ``PIP_*`` variable: so that the
    build's pip finds the same index, mirror and CA as this machine's pip."""
    mounts: set[Path] = set()
    for file in _pip_config_files():
        mounts.add(file)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(file)
        for section in parser.sections():
            for value in parser[section].values():
                mounts.update(_paths_in(value))
    options = []
    for name, value in sorted(os.environ.items()):
        if name.startswith("PIP_"):
            options += ["--build-arg", name]
            mounts.update(_paths_in(value))
    for path in sorted(mounts):
        options += ["-v", f"{path}:{path}:ro"]
    return options


def build_image(tag: str, base: str) -> subprocess.CompletedProcess:
    # docker format: OCI images drop HEALTHCHECK; no layers: vfs copies the whole tree per layer
    return podman("build", "--format", "docker", "--layers=false", "--network", "host", *ULIMITS, *pip_build_options(),
                  "--build-arg", f"BASE={base}", "-t", tag, "-f", str(ROOT / "Dockerfile"), str(ROOT),
                  timeout=900)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run_args(name: str, image: str, args: Sequence[str], *, volumes: Sequence[str] = (),
             env: dict[str, str] | None = None) -> list[str]:
    """A foreground ``podman run`` on the host's network (loopback is the host's)."""
    options = ["--rm", "--name", name, "--network", "host", *ULIMITS]
    for volume in volumes:
        options += ["-v", volume]
    for key, value in (env or {}).items():
        options += ["-e", f"{key}={value}"]
    return ["podman", *GLOBAL, "run", *options, image, *args]


def remove_containers(names: Sequence[str]) -> None:
    for name in names:
        podman("rm", "--force", "--ignore", "--time", "2", name, check=False)

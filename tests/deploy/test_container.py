"""The container image (Dockerfile), built with podman once per session and run as a server,
a destination and a source in three containers on the host's network: a real page goes
through the tunnel, unchanged (sha256), and the image's health check, store and user are
what docs/deploy.md says.

The server takes a config file mounted at /data plus CONNET_SERVER__* variables, the
destination only flags, the source a config file mounted at /data: the three ways the image
is documented to be used. Every address is loopback and every port the system's pick.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from deploy.conftest import require
from deploy.podman import (
    DEFAULT_BASE,
    IMAGE_UID,
    build_image,
    missing_prerequisite,
    podman,
    remove_containers,
    run_args,
    unique,
)
from support.cluster import TOKENS
from support.daemons import Daemons
from support.services import http_server

START = 180.0  # a container's first log line: vfs copies the image for each container


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    base = os.environ.get("DEPLOY_BASE_IMAGE", DEFAULT_BASE)
    require(missing_prerequisite(base))
    require(None if os.geteuid() == 0 else "the container tests run podman as root")
    tag = unique("localhost/connet-test")
    started = time.monotonic()
    try:
        result = build_image(tag, base)
    except Exception:
        podman("rmi", "--force", tag, check=False)
        raise
    try:
        assert result.returncode == 0, result.stderr[-4000:]
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        print(f"\nimage {tag} from {base}: built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False)


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the containers a test starts; removed at teardown whatever happened."""
    names: list[str] = []
    try:
        yield names
    finally:
        remove_containers(names)


def _fetch(url: str, timeout: float = 30.0) -> bytes:
    """The first connection may race the peers' handshake: the tunnel refuses, never hangs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=20) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # retry pacing after a refused attempt, not a wait for an event


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data_dir(path: Path) -> Path:
    """A directory to mount at /data: the image's user must own it (it writes its store there)."""
    path.mkdir()
    return path


def _give_to_image_user(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        os.chown(item, IMAGE_UID, IMAGE_UID)


def test_server_destination_and_source_in_containers_carry_a_page(
    image: str, containers: list[str], daemons: Daemons, certs: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    page = os.urandom(1 << 20)
    (site / "page.bin").write_bytes(page)

    server_data = _data_dir(tmp_path / "server-data")
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        shutil.copy(certs / name, server_data / name)
    (server_data / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (server_data / "server.toml").write_text(
        '[server]\ncert-file = "server.pem"\nkey-file = "server-key.pem"\ntokens-file = "tokens.txt"\n'
    )
    _give_to_image_user(server_data)
    status_port = _free_tcp_port()
    server_name = unique("connet-test-server")
    containers.append(server_name)
    server = daemons.start("server", [], command=run_args(
        server_name, image, ["server", "--config", "/data/server.toml"],
        volumes=[f"{server_data}:/data"],
        env={
            "CONNET_SERVER__ADDR": "127.0.0.1:0",
            "CONNET_SERVER__RELAY_ADDR": "127.0.0.1:0",
            "CONNET_SERVER__RELAY_HOSTNAME": "127.0.0.1",
            "CONNET_SERVER__STATUS_ADDR": f"127.0.0.1:{status_port}",
        },
    ))
    control_port = int(server.wait_for(r"listening control udp 127\.0\.0\.1:(\d+)", START).group(1))
    server.wait_for(rf"listening status tcp 127\.0\.0\.1:{status_port}")

    with http_server(str(site)) as web_port:
        destination_name = unique("connet-test-destination")
        containers.append(destination_name)
        destination = daemons.start("destination", [], command=run_args(
            destination_name, image,
            ["--token", TOKENS[0], "--server-addr", f"127.0.0.1:{control_port}", "--server-cas", "/certs/ca.pem",
             "--direct-addr", "127.0.0.1:0", "--dst-name", "web", "--dst-addr", f"127.0.0.1:{web_port}"],
            volumes=[f"{certs / 'ca.pem'}:/certs/ca.pem:ro"],
        ))
        destination.wait_for(r"listening direct udp", START)

        source_data = _data_dir(tmp_path / "source-data")
        shutil.copy(certs / "ca.pem", source_data / "ca.pem")
        (source_data / "token.txt").write_text(TOKENS[1] + "\n")
        (source_data / "client.toml").write_text(
            f'[client]\ntoken-file = "token.txt"\nserver-addr = "127.0.0.1:{control_port}"\nserver-cas = "ca.pem"\n'
            'direct-addr = "127.0.0.1:0"\n[client.sources.web]\naddr = "127.0.0.1:0"\n'
        )
        _give_to_image_user(source_data)
        source_name = unique("connet-test-source")
        containers.append(source_name)
        source = daemons.start("source", [], command=run_args(
            source_name, image, ["--config", "/data/client.toml"], volumes=[f"{source_data}:/data"],
        ))
        source_port = int(source.wait_for(r"listening source tcp 127\.0\.0\.1:(\d+)", START).group(1))
        source.wait_for(r"peer \S+ connected direct", 60)

        body = _fetch(f"http://127.0.0.1:{source_port}/page.bin")
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(page).hexdigest()

    # the image's health check: the server's GETs its status endpoint, the destination has none
    # (tests/deploy/test_healthcheck.py checks what it says in each case)
    for name in (server_name, destination_name):
        result = podman("healthcheck", "run", name, check=False)
        assert result.returncode == 0, (name, result.stdout, result.stderr)
    # the store went to /data by default, written by the image's unprivileged user
    for component in ("control", "relay"):
        store = server_data / component
        assert store.is_dir() and any(store.iterdir()), component
        assert store.stat().st_uid == IMAGE_UID

    for daemon in (source, destination, server):
        assert daemon.stop() == 0, daemon.name

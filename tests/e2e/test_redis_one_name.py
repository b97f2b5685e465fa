"""One host name with three addresses (``control.test``: 127.0.0.1, .2 and .3 in a network
namespace's own /etc/hosts) is three control instances behind one Redis: clients given just
that name move to the next address when their instance is killed, and the tunnel goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.daemons import CONNET, Daemons
from support.netns import NETTOOL, Netns, netns_unavailable
from support.programs import need_program
from support.redis_server import need_redis_client

pytestmark = pytest.mark.natlab
PORT = 19190
TOKENS = ("t-dst", "t-src")


@pytest.fixture
def ns():
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"cnrd{os.getpid()}"
    hosts = Path("/etc/netns") / name  # `ip netns exec` mounts these over /etc inside
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.{k} control.test\n" for k in (1, 2, 3)))
    netns = Netns(name)
    yield netns
    netns.delete()
    shutil.rmtree(hosts, ignore_errors=True)


def report(ns: Netns, k: int) -> dict:
    code = f"import urllib.request;print(urllib.request.urlopen('http://127.0.0.{k}:{PORT + 100}/',timeout=5).read().decode())"
    return json.loads(ns.run(sys.executable, "-c", code).stdout)


def eventually(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def test_a_name_with_three_addresses_is_three_instances(ns: Netns, tmp_path: Path) -> None:
    need_redis_client()
    redis_server = need_program("redis-server")
    daemons = Daemons(tmp_path)
    try:
        inside = ns.prefix()
        daemons.start("redis", ["--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(tmp_path)], command=[*inside, redis_server])
        eventually(lambda: ns.run("redis-cli", "ping", check=False).stdout.strip() == "PONG", 10, "redis up")
        subprocess.run([*CONNET, "cert", "--out", str(tmp_path / "certs"), "--host", "control.test"], check=True,
                       capture_output=True)
        certs = tmp_path / "certs"
        instances = []
        for k in (1, 2, 3):
            config = tmp_path / f"control{k}.toml"
            config.write_text(
                f'[control]\naddr = "127.0.0.{k}:{PORT}"\nstatus-addr = "127.0.0.{k}:{PORT + 100}"\n'
                f'cert-file = "{certs / "server.pem"}"\nkey-file = "{certs / "server-key.pem"}"\n'
                f"client-tokens = {json.dumps(list(TOKENS))}\n"
                '[plugins.redis]\nurl = "redis://127.0.0.1:6379/0"\nexpiry = 3\nrefresh-interval = 0.5\n')
            daemon = daemons.start(f"control{k}", ["control", "--config", str(config)], command=[*inside, *CONNET])
            daemon.listening("control", "udp")
            instances.append(daemon)
        echo = daemons.start("echo", [str(NETTOOL), "echo"], command=[*inside, sys.executable])
        _, echo_port = echo.listening("echo", "tcp")
        common = ["--server-addr", f"control.test:{PORT}", "--server-cas", str(certs / "ca.pem"),
                  "--direct-addr", "127.0.0.1:0"]
        daemons.start("dst", ["--token", TOKENS[0], *common, "--dst-name", "web", "--dst-addr",
                              f"127.0.0.1:{echo_port}"], command=[*inside, *CONNET])
        src = daemons.start("src", ["--token", TOKENS[1], *common, "--src-name", "web", "--src-addr", "127.0.0.1:0"],
                            command=[*inside, *CONNET])
        _, port = src.listening("source", "tcp")
        eventually(lambda: ns.send(port, 1 << 20).returncode == 0, 30, "the tunnel")
        # both clients dialed the name's first address: instance 1
        assert len(report(ns, 1)["clients"]) == 2
        instances[0].kill()
        assert ns.send(port, 1 << 20).returncode == 0  # the tunnel does not wait for control
        eventually(lambda: len(report(ns, 2)["clients"]) == 2, 20, "both clients on the name's next address")
        eventually(lambda: report(ns, 3)["names"] == {"web": {"destination": 1, "source": 1}}, 15,
                   "instance 1's announcements expired from instance 3")
        assert ns.send(port, 1 << 20).returncode == 0
    finally:
        daemons.close()

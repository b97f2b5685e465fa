"""Endpoint expiry on the server: a destination whose control session is cut (nftables drops
its packets to control, its direct path to the source stays) is kept announced for
endpoint-expiry-timeout. Reconnecting within it, the source's status never loses the
destination; staying away longer, the source is told once the timeout passed."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.cluster import TOKENS, write_server_config
from support.daemons import CONNET, Daemon, Daemons
from support.netns import NETTOOL, Netns, netns_unavailable

UNAVAILABLE = netns_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None and not os.environ.get("NATLAB_REQUIRED"),
                                reason=UNAVAILABLE or "")
EXPIRY = 10.0
FETCH = "import json,sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())"


@pytest.fixture
def netns() -> Iterator[Netns]:
    if UNAVAILABLE is not None:
        pytest.fail(f"NATLAB_REQUIRED is set but {UNAVAILABLE}")
    ns = Netns(f"cnex{os.getpid() % 100000}")
    try:
        yield ns
    finally:
        ns.delete()


def spawn(ns: Netns, daemons: Daemons, name: str, args: list[str]) -> Daemon:
    daemon = Daemon(name, args, cwd=daemons.workdir, command=[*ns.prefix(), *CONNET])
    daemons.started.append(daemon)
    return daemon


def status(ns: Netns, daemon: Daemon) -> dict:
    _, port = daemon.listening("status", "tcp")
    return json.loads(ns.run(sys.executable, "-c", FETCH, f"http://127.0.0.1:{port}/").stdout)


def peers_of(ns: Netns, src: Daemon) -> int:
    (endpoint,) = status(ns, src)["endpoints"]
    return len(endpoint["peers"])


def seen(daemon: Daemon, pattern: str, start: int) -> bool:
    import re

    return any(re.search(pattern, line) for line in daemon.lines[start:])


def cut(src_port: int, dst_port: int) -> str:
    return ("table inet cnexpiry {\n  chain out { type filter hook output priority 0;\n"
            f"    udp sport {src_port} udp dport {dst_port} drop\n"
            f"    udp sport {dst_port} udp dport {src_port} drop\n  }}\n}}\n")


def test_a_quick_reconnect_is_not_news_and_a_long_absence_is(netns: Netns, daemons: Daemons, certs: Path) -> None:
    config = write_server_config(daemons.workdir / "server.toml", certs, status_addr="127.0.0.1:0")
    config.write_text(config.read_text() + f'endpoint-expiry-timeout = "{EXPIRY:g}s"\n')
    server = spawn(netns, daemons, "server", ["server", "--config", str(config), "--log-level", "debug"])
    _, control_port = server.listening("control")
    echo = Daemon("echo", [], cwd=daemons.workdir, command=[*netns.prefix(), sys.executable, str(NETTOOL), "echo"])
    daemons.started.append(echo)
    _, echo_port = echo.listening("echo", "tcp")
    common = ["--server-addr", f"127.0.0.1:{control_port}", "--server-cas", str(certs / "ca.pem"),
              "--direct-addr", "127.0.0.1:0", "--log-level", "debug"]
    dst = spawn(netns, daemons, "dst", [*common, "--token", TOKENS[0], "--dst-name", "web",
                                        "--dst-addr", f"127.0.0.1:{echo_port}", "--metadata", "dst in the lab"])
    src = spawn(netns, daemons, "src", [*common, "--token", TOKENS[1], "--src-name", "web", "--src-addr",
                                        "127.0.0.1:0", "--status-addr", "127.0.0.1:0", "--metadata", "src"])
    _, dst_direct = dst.listening("direct")
    _, source_port = src.listening("source", "tcp")
    src.wait_for(r"peer \S+ connected direct")
    assert peers_of(netns, src) == 1
    control = status(netns, server)["control"]
    assert sorted(c["metadata"] for c in control["clients"]) == ["dst in the lab", "src"]
    assert status(netns, src)["metadata"] == "src"

    # 1. the destination's control session is cut, and comes back within the expiry
    mark, server_mark = dst.mark(), server.mark()
    netns.nft(cut(dst_direct, control_port))
    dst.wait_for(r"lost the control server", start=mark, timeout=15)
    server.wait_for(r"client \S+ disconnected", start=server_mark, timeout=15)
    gone_at = time.monotonic()
    assert status(netns, server)["control"]["lingering_endpoints"] == 1
    netns.run("nft", "delete", "table", "inet", "cnexpiry")
    while not seen(dst, r"connected to control server", mark):
        assert peers_of(netns, src) == 1, "the source was told the destination left"
        assert time.monotonic() - gone_at < EXPIRY, "the destination did not reconnect within the expiry"
    reconnected = time.monotonic() - gone_at
    deadline = time.monotonic() + 5
    while status(netns, server)["control"]["lingering_endpoints"] != 0:  # its new announcement took over
        assert time.monotonic() < deadline
    assert peers_of(netns, src) == 1
    assert netns.send(source_port, 50_000).returncode == 0

    # 2. cut for longer than the expiry: the source is told once it passed
    mark, server_mark = dst.mark(), server.mark()
    netns.nft(cut(dst_direct, control_port))
    server.wait_for(r"client \S+ disconnected", start=server_mark, timeout=15)
    gone_at = time.monotonic()
    while peers_of(netns, src) == 1:
        assert time.monotonic() - gone_at < EXPIRY + 5, "the source was never told"
    told_after = time.monotonic() - gone_at
    print(f"\nreconnected {reconnected:.1f} s after control dropped the session (not news); "
          f"without a reconnect the source was told after {told_after:.1f} s (expiry {EXPIRY:g} s)")
    assert told_after >= EXPIRY - 1.0
    netns.run("nft", "delete", "table", "inet", "cnexpiry")
    dst.wait_for(r"connected to control server", start=mark, timeout=20)

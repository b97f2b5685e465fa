"""Route ``any``: direct while the direct path lives, the relay while it is dead, direct again
once it is back. Everything runs in a private network namespace whose nftables drop the
direct path's packets on demand."""

from __future__ import annotations

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


@pytest.fixture
def netns() -> Iterator[Netns]:
    if UNAVAILABLE is not None:
        pytest.fail(f"NATLAB_REQUIRED is set but {UNAVAILABLE}")
    ns = Netns(f"cnfo{os.getpid() % 100000}")
    try:
        yield ns
    finally:
        ns.delete()


def spawn(ns: Netns, daemons: Daemons, name: str, args: list[str]) -> Daemon:
    daemon = Daemon(name, args, cwd=daemons.workdir, command=[*ns.prefix(), *CONNET])
    daemons.started.append(daemon)
    return daemon


def drop_rules(src_port: int, dst_port: int) -> str:
    return (
        "table inet cnfault {\n"
        "  chain out { type filter hook output priority 0;\n"
        f"    udp sport {src_port} udp dport {dst_port} drop\n"
        f"    udp sport {dst_port} udp dport {src_port} drop\n"
        "  }\n"
        "}\n"
    )


def test_any_fails_over_to_the_relay_and_back(netns: Netns, daemons: Daemons, certs: Path) -> None:
    config = write_server_config(daemons.workdir / "server.toml", certs)
    server = spawn(netns, daemons, "server", ["server", "--config", str(config), "--log-level", "debug"])
    _, control_port = server.listening("control")
    echo = Daemon("echo", [], cwd=daemons.workdir, command=[*netns.prefix(), sys.executable, str(NETTOOL), "echo"])
    daemons.started.append(echo)
    _, echo_port = echo.listening("echo", "tcp")
    common = ["--server-addr", f"127.0.0.1:{control_port}", "--server-cas", str(certs / "ca.pem"),
              "--direct-addr", "127.0.0.1:0", "--log-level", "debug"]
    dst = spawn(netns, daemons, "dst", [*common, "--token", TOKENS[0], "--dst-name", "web",
                                        "--dst-addr", f"127.0.0.1:{echo_port}"])
    src = spawn(netns, daemons, "src", [*common, "--token", TOKENS[1], "--src-name", "web", "--src-addr", "127.0.0.1:0"])
    _, src_direct = src.listening("direct")
    _, dst_direct = dst.listening("direct")
    _, source_port = src.listening("source", "tcp")
    src.wait_for(r"peer \S+ connected direct")
    src.wait_for(r"relay \S+ connected")

    mark = src.mark()
    assert netns.send(source_port, 100_000).returncode == 0
    src.wait_for(r"connection via direct path", start=mark, timeout=1)

    # the direct path dies
    netns.nft(drop_rules(src_direct, dst_direct))
    died = time.monotonic()
    while True:
        mark = src.mark()
        result = netns.send(source_port, 100_000, timeout=10)
        assert result.returncode == 0, f"a connection failed instead of failing over: {result.stdout}"
        used = src.wait_for(r"connection via (direct|relay) path", start=mark, timeout=2).group(1)
        if used == "relay":
            break
        assert time.monotonic() - died < 5, "still not on the relay 5 s after the direct path died"
    assert time.monotonic() - died < 5

    # liveness declares the path dead; from then on the relay is the first choice
    src.wait_for(r"direct path via \S+ closed: timeout", start=mark, timeout=10)
    mark = src.mark()
    assert netns.send(source_port, 100_000).returncode == 0
    assert src.wait_for(r"connection via (direct|relay) path", start=mark, timeout=5).group(1) == "relay"

    # the direct path is back: new connections go direct again
    netns.run("nft", "delete", "table", "inet", "cnfault")
    src.wait_for(r"peer \S+ connected direct", start=mark, timeout=30)
    mark = src.mark()
    assert netns.send(source_port, 100_000).returncode == 0
    assert src.wait_for(r"connection via (direct|relay) path", start=mark, timeout=5).group(1) == "direct"

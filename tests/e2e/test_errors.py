"""What a user sees when something is wrong at run time: one clear line, no traceback."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from support.cluster import TOKENS, start_server, write_server_config
from support.daemons import Daemons


def assert_one_error_line(daemon, code: int, *needles: str) -> str:
    daemon.proc.wait(20)
    assert daemon.proc.returncode == code, daemon.log()
    daemon._reader.join(5)
    text = daemon.log()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("connet: error:")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_corrupt_relay_identity_in_the_store(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    server = start_server(daemons, certs, store_dir=store)
    server.daemon.wait_for("listening relay udp")
    assert server.daemon.stop() == 0
    (store / "relay" / "identity" / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    config = write_server_config(daemons.workdir / "again.toml", certs, store_dir=store)
    again = daemons.start("again", ["server", "--config", str(config)])
    assert_one_error_line(again, 2, "identity", "corrupt")


def test_store_dir_that_cannot_be_used(daemons: Daemons, certs: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "control").write_text("a file where a directory belongs")
    config = write_server_config(daemons.workdir / "server.toml", certs, store_dir=store)
    server = daemons.start("server", ["server", "--config", str(config)])
    assert_one_error_line(server, 2, str(store / "control"), "not a directory")


def test_address_in_use(daemons: Daemons, certs: Path) -> None:
    first = start_server(daemons, certs)
    config = write_server_config(daemons.workdir / "second.toml", certs, addr=f"127.0.0.1:{first.control_port}")
    second = daemons.start("second", ["server", "--config", str(config)])
    assert_one_error_line(second, 1, "Address already in use", f"127.0.0.1:{first.control_port}")


def test_unreachable_control_server_is_retried_with_clear_lines(daemons: Daemons, certs: Path) -> None:
    # a bound socket that never answers: the control server is "down"
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        client = daemons.start("client", ["--token", TOKENS[0], "--server-addr", f"127.0.0.1:{port}",
                                          "--server-cas", str(certs / "ca.pem"), "--direct-addr", "127.0.0.1:0",
                                          "--src-name", "web", "--src-addr", "127.0.0.1:0"])
        client.wait_for(rf"cannot reach control server 127\.0\.0\.1:{port}", timeout=15)
        assert client.stop() == 0
    assert "Traceback" not in client.log()


def test_second_signal_exits_at_once(daemons: Daemons, certs: Path) -> None:
    server = start_server(daemons, certs)
    server.daemon.proc.send_signal(signal.SIGINT)
    server.daemon.proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = server.daemon.proc.wait(5)
    assert time.monotonic() - started < 1.0
    assert code in (0, 128 + signal.SIGINT)

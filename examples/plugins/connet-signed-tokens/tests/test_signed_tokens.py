"""connet-signed-tokens, installed and found through its entry point: keys and tokens made with
its commands, a server with no token list, a page through a tunnel; tampered, expired,
wrong-name and wrong-role tokens refused; a live session closed when its token expires."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from signed_tokens_support import Daemon, connet


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    result = connet("signed-tokens", "keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "signing.key").stat().st_mode & 0o077 == 0
    return out


def issue(keys: Path, *args: str) -> str:
    result = connet("signed-tokens", "issue", "--key", str(keys / "signing.key"), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def tamper(token: str) -> str:
    """The same signature over claims that grant more (another name)."""
    prefix, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["name"] = "*"
    forged = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


def test_keygen_and_issue_make_a_verifiable_token(keys):
    token = issue(keys, "--name", "web-*", "--role", "destination", "--ttl", "1h", "--cidr", "127.0.0.0/8")
    assert token.startswith("st1.") and token.count(".") == 2
    # a second keygen into the same place does not overwrite the secret key
    again = connet("signed-tokens", "keygen", "--out", str(keys))
    assert again.returncode == 1 and "exists already" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--name", "x", "--role", "owner"], "'owner' is not one of"),
    (["--name", "x", "--role", "any", "--ttl", "soon"], "is not a duration"),
    (["--name", "x", "--role", "any", "--cidr", "nonsense"], "does not appear to be an IPv4 or IPv6 network"),
])
def test_issue_refuses_bad_claims_in_one_line(keys, args, message):
    result = connet("signed-tokens", "issue", "--key", str(keys / "signing.key"), *args)
    assert result.returncode == 2 if "role" in message else result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_server_refuses_a_public_key_setting_of_the_wrong_type(tmp_path, certs):
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, "1"))
    result = connet("check", "--config", str(config))
    assert result.returncode == 2
    assert "plugins.signed-tokens.public-key: expected a file or directory" in result.stderr


def server_toml(certs: Path, public_key: str) -> str:
    return (
        'disable-plugins = ["tokens"]\n'
        "[server]\n"
        'addr = "127.0.0.1:0"\n'
        'relay-addr = "127.0.0.1:0"\n'
        'status-addr = "127.0.0.1:0"\n'
        f'cert-file = "{certs / "server.pem"}"\n'
        f'key-file = "{certs / "server-key.pem"}"\n'
        "[plugins.signed-tokens]\n"
        f"public-key = {public_key}\n"
    )


class Site:
    """An HTTP server on loopback with one page."""

    def __init__(self, root: Path, page: bytes) -> None:
        root.mkdir()
        (root / "index.html").write_bytes(page)
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **kw)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fetch(port: int, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the tunnel refuses (a reset) until both ends are matched: retry pacing


def client(server_port: int, certs: Path, token: str, *args: str) -> Daemon:
    return Daemon(["--token", token, "--server-addr", f"127.0.0.1:{server_port}",
                   "--server-cas", str(certs / "ca.pem"), "--direct-addr", "127.0.0.1:0", *args])


def status(daemon: Daemon) -> dict:
    port = daemon.port("status", "tcp")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return json.load(response)


def test_signed_tokens_end_to_end(tmp_path, certs, keys, daemons):
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, f'"{keys / "signing.pub"}"'))
    assert connet("check", "--config", str(config)).returncode == 0
    server = Daemon(["server", "--config", str(config)])
    daemons.append(server)
    port = server.port("control", "udp")

    page = os.urandom(16).hex().encode() + b"<h1>signed</h1>" + os.urandom(200_000)
    site = Site(tmp_path / "site", page)
    try:
        dst_token = issue(keys, "--name", "web-*", "--role", "destination", "--subject", "dst")
        src_token = issue(keys, "--name", "web-*", "--role", "source", "--subject", "src")
        daemons.append(client(port, certs, dst_token, "--dst-name", "web-1", "--dst-addr", f"127.0.0.1:{site.port}"))
        src = client(port, certs, src_token, "--src-name", "web-1", "--src-addr", "127.0.0.1:0")
        daemons.append(src)
        body = fetch(src.port("source", "tcp"))
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(page).hexdigest()
        server.wait_for(r"client \S+ connected \(signed:dst\)")

        mark = server.mark()
        # tampered and expired: vetoed, one line each
        daemons.append(client(port, certs, tamper(dst_token), "--dst-name", "db", "--dst-addr", "127.0.0.1:9"))
        server.wait_for(r"refused: plugin 'signed-tokens' vetoed the token: signature does not verify", start=mark)
        expired = issue(keys, "--name", "web-*", "--role", "destination", "--ttl", "0s", "--subject", "old")
        daemons.append(client(port, certs, expired, "--dst-name", "web-2", "--dst-addr", "127.0.0.1:9"))
        server.wait_for(r"refused: plugin 'signed-tokens' vetoed the token: token of 'old' expired at", start=mark)
        # wrong name, wrong role: the announcement refused, one line each
        daemons.append(client(port, certs, dst_token, "--dst-name", "db", "--dst-addr", "127.0.0.1:9"))
        server.wait_for(r"\(signed:dst\) may not announce destination 'db': signed:dst: name 'db' does not match",
                        start=mark)
        daemons.append(client(port, certs, dst_token, "--src-name", "web-3", "--src-addr", "127.0.0.1:0"))
        server.wait_for(r"\(signed:dst\) may not announce source 'web-3': signed:dst: role source is not "
                        r"role-matches destination", start=mark)
        # the tunnel still carries every byte
        assert hashlib.sha256(fetch(src.port("source", "tcp"))).hexdigest() == hashlib.sha256(page).hexdigest()
    finally:
        site.close()
    assert server.proc.poll() is None


def test_a_live_session_whose_token_expires_is_closed(tmp_path, certs, keys, daemons):
    config = tmp_path / "server.toml"
    config.write_text(server_toml(certs, f'"{keys / "signing.pub"}"'))
    server = Daemon(["server", "--config", str(config)])
    daemons.append(server)
    port = server.port("control", "udp")
    short = issue(keys, "--name", "web", "--role", "destination", "--ttl", "3s", "--subject", "brief")
    daemons.append(client(port, certs, short, "--dst-name", "web", "--dst-addr", "127.0.0.1:9"))
    connected = server.wait_for(r"client (\S+) connected \(signed:brief\)")
    address = connected.group(1)
    server.wait_for(rf"client {address}: token revoked, closing its session", timeout=15)
    server.wait_for(rf"client {address} disconnected")
    # and it cannot come back with it
    server.wait_for(r"vetoed the token: token of 'brief' expired at", timeout=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

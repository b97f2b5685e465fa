"""The original connet's testing flow on both QUIC libraries: a self-signed server
certificate made with the real ``openssl`` CLI (which marks it ``CA:TRUE``), given to the
server as cert-file/key-file and to both clients as ``server-cas``.

qh3 verifies chains with webpki rules, which refuse a CA certificate as the end entity
("the server certificate is unacceptable"); the adapter accepts a leaf that is
byte-identical to one of the configured CA certificates (and still checks its name and
dates), so this works on qh3 as it does on aioquic.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cluster import start_destination, start_server, start_source
from support.daemons import Daemons
from support.services import echo_server, exchange, sha256, wait_tunnel


def openssl_self_signed(out: Path, subject_alt_name: str) -> Path:
    """cert.pem/key.pem exactly as the original's testing flow makes them, laid out under
    the names the cluster helpers use (the certificate is its own CA)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    out.mkdir()
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(out / "server-key.pem"), "-out", str(out / "server.pem"), "-days", "30",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName={subject_alt_name}"],
        check=True, capture_output=True,
    )
    shutil.copyfile(out / "server.pem", out / "ca.pem")
    text = subprocess.run([openssl, "x509", "-in", str(out / "server.pem"), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    assert "CA:TRUE" in text  # what made qh3 refuse it
    return out


async def test_tunnel_with_an_openssl_self_signed_server_certificate(
    transport: str, daemons: Daemons, tmp_path: Path
) -> None:
    certs = openssl_self_signed(tmp_path / "certs", "DNS:localhost,IP:127.0.0.1")
    server = start_server(daemons, certs)
    payload = os.urandom(4 * 1024 * 1024)
    async with echo_server() as echo_port:
        start_destination(daemons, server, echo_port)
        _, source_port = start_source(daemons, server)
        await wait_tunnel(source_port)
        received = await asyncio.wait_for(exchange(source_port, payload), 60)
    assert sha256(received) == sha256(payload)


def test_a_self_signed_certificate_for_another_name_is_still_refused(
    transport: str, daemons: Daemons, tmp_path: Path
) -> None:
    # the exact-match acceptance must not skip the name: this certificate names neither
    # the address the clients dial (127.0.0.1) nor anything they could mean by it
    certs = openssl_self_signed(tmp_path / "certs", "DNS:elsewhere.example,IP:127.0.0.2")
    server = start_server(daemons, certs)
    source, _ = start_source(daemons, server)
    refused = source.wait_for(r"cannot reach control server \S+: QUIC handshake .* failed: (.*)", timeout=30)
    assert "hostname '127.0.0.1' doesn't match" in refused.group(1)

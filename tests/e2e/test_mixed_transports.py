"""Mixed deployments: daemons on different QUIC libraries talk to each other.

With ``transport = "auto"`` a box whose qh3 does not import runs aioquic, and a user may pin
either library on one box, so every pairing must work: aioquic clients on a qh3 server and
the other way round, and a destination and a source on different libraries, direct and
relayed. Each daemon gets its library through ``CONNET_TRANSPORT`` in its own environment;
its status JSON says which one it runs, so the test checks the mix is real.

aioquic clients could not reach a qh3 server at all before the workarounds in
``connet_quic/_qh3_amplification.py`` (docs/performance.md, Known problems).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import ipaddress
import json
import os
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from connet_core.transport import TransportOptions
from connet_quic._aioquic import AioquicLibrary
from support.cluster import start_destination, start_server, start_source
from support.daemons import Daemon, Daemons
from support.services import echo_server, exchange, sha256, wait_tunnel

pytestmark = pytest.mark.skipif(importlib.util.find_spec("qh3") is None, reason="qh3 is not installed")

LOCAL = "127.0.0.1:0"
PAYLOAD = 4 * 1024 * 1024

# (server, destination, source): who runs which library
MIXES = {
    "aioquic-clients-on-qh3-server": ("qh3", "aioquic", "aioquic"),
    "qh3-clients-on-aioquic-server": ("aioquic", "qh3", "qh3"),
    "qh3-destination-aioquic-source": ("qh3", "qh3", "aioquic"),
    "aioquic-destination-qh3-source": ("aioquic", "aioquic", "qh3"),
}


def status(daemon: Daemon) -> dict:
    host, port = daemon.listening("status", "tcp")
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
        return json.loads(response.read())


def error_lines(daemon: Daemon) -> list[str]:
    return re.findall(r"^\S+ ERROR .*$", daemon.log(), re.MULTILINE)


def paths(report: dict, kind: str) -> list[dict]:
    return [p for e in report["endpoints"] for peer in e["peers"] for p in peer["paths"] if p["kind"] == kind]


@pytest.mark.parametrize("route", ["direct", "relay"])
@pytest.mark.parametrize("mix", list(MIXES))
async def test_mixed_transports_carry_a_tunnel(daemons: Daemons, certs: Path, mix: str, route: str) -> None:
    server_on, dst_on, src_on = MIXES[mix]
    server = start_server(daemons, certs, status_addr=LOCAL, env={"CONNET_TRANSPORT": server_on})
    payload = os.urandom(PAYLOAD)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, route=route, status_addr=LOCAL,
                                env={"CONNET_TRANSPORT": dst_on})
        src, source_port = start_source(daemons, server, route=route, status_addr=LOCAL,
                                        env={"CONNET_TRANSPORT": src_on})
        await wait_tunnel(source_port)
        received = await asyncio.wait_for(exchange(source_port, payload), 120)
        reports = {d.name: status(d) for d in (server.daemon, dst, src)}
        # both ends of a direct path dial (one dial is kept): a refused handshake in the
        # other direction would leave the tunnel up, but its accepting side logs an error
        errors = {d.name: error_lines(d) for d in (server.daemon, dst, src)}

    assert sha256(received) == sha256(payload)
    assert errors == {"server": [], "dst": [], "src": []}
    # the mix is real: each daemon runs the library it was given
    assert [reports[n]["transport"] for n in ("server", "dst", "src")] == [server_on, dst_on, src_on]
    assert reports["src"]["control"]["connected"] is True
    assert reports["dst"]["control"]["connected"] is True
    # the payload went both ways over a path of the route's kind (a path's counters are its
    # whole QUIC connection's), and over no path of the other kind
    other = "relay" if route == "direct" else "direct"
    for name in ("src", "dst"):
        used = paths(reports[name], route)
        assert used, f"{name} has no {route} path: {reports[name]['endpoints']}"
        assert sum(p["bytes_received"] for p in used) >= PAYLOAD
        assert sum(p["bytes_sent"] for p in used) >= PAYLOAD
        assert not paths(reports[name], other)


def write_long_chain(out: Path) -> Path:
    """A server certificate as a public CA would issue it: RSA-4096 keys, leaf and
    intermediate in server.pem (about 2.8 kB of DER), the root in ca.pem. The server's
    Handshake flight is then larger than what 3 x an aioquic client's 1200-byte first datagram
    leaves after the server's Initial."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject: str, issuer: str, key, issuer_key, *, ca: bool, san: list | None = None) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, intermediate_key, leaf_key = (rsa.generate_private_key(65537, 4096) for _ in range(3))
    root = issue("connet test root", "connet test root", root_key, root_key, ca=True)
    intermediate = issue("connet test intermediate", "connet test root", intermediate_key, root_key, ca=True)
    leaf = issue("localhost", "connet test intermediate", leaf_key, intermediate_key, ca=False,
                 san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    pem = serialization.Encoding.PEM
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(root.public_bytes(pem))
    (out / "server.pem").write_bytes(leaf.public_bytes(pem) + intermediate.public_bytes(pem))
    (out / "server-key.pem").write_bytes(leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return out


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_chain(tmp_path_factory.mktemp("long-chain"))


async def test_aioquic_clients_on_a_qh3_server_with_a_long_certificate_chain(daemons: Daemons, long_chain: Path) -> None:
    """The qh3 server's Handshake flight outgrows its anti-amplification budget: it must wait
    for the client's next datagram (which validates the address), not fail the connection
    ("packet builder capacity exhausted" from poll_transmit)."""
    server = start_server(daemons, long_chain, status_addr=LOCAL, env={"CONNET_TRANSPORT": "qh3"})
    payload = os.urandom(PAYLOAD)
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port, route="relay", status_addr=LOCAL,
                                env={"CONNET_TRANSPORT": "aioquic"})
        src, source_port = start_source(daemons, server, route="relay", status_addr=LOCAL,
                                        env={"CONNET_TRANSPORT": "aioquic"})
        await wait_tunnel(source_port)
        received = await asyncio.wait_for(exchange(source_port, payload), 120)
        reports = {d.name: status(d) for d in (server.daemon, dst, src)}
        errors = {d.name: error_lines(d) for d in (server.daemon, dst, src)}
    assert sha256(received) == sha256(payload)
    assert errors == {"server": [], "dst": [], "src": []}
    assert [reports[n]["transport"] for n in ("server", "dst", "src")] == ["qh3", "aioquic", "aioquic"]
    for name in ("src", "dst"):
        assert reports[name]["control"]["connected"] is True
        assert sum(p["bytes_received"] for p in paths(reports[name], "relay")) >= PAYLOAD


def test_a_qh3_server_answers_an_aioquic_clients_first_datagram_with_its_whole_flight(certs: Path) -> None:
    """Not only eventually: connet's qh3 adapter as a server and its aioquic adapter as a
    client, over two loopback UDP sockets, with no timer run on either side: the server's
    answer to the client's first datagram completes the client's handshake. Before the
    workaround the server credited only the Initial packet of the client's padded datagram,
    sent its Initial alone and failed the connection ("packet builder capacity exhausted")."""
    from connet_quic._qh3 import Qh3Library  # here: the module skips as a whole without qh3

    options = TransportOptions()
    common = {"alpns": ["interop"], "idle_timeout": options.idle_timeout,
              "max_datagram_size": options.max_datagram_size, "initial_rtt": None}
    server_lib, client_lib = Qh3Library(), AioquicLibrary()
    server_config = server_lib.configuration(
        is_client=False, cert_pem=(certs / "server.pem").read_bytes(), key_pem=(certs / "server-key.pem").read_bytes(),
        **common)
    client_config = client_lib.configuration(
        is_client=True, server_name="localhost", cadata=(certs / "ca.pem").read_bytes(), **common)
    client = client_lib.new_connection(client_config, max_streams=options.max_streams, reset_token=lambda cid: bytes(16))

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server_sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client_sock:
        for sock in (server_sock, client_sock):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)  # each recvfrom waits for a datagram this test itself sent
        server_addr, client_addr = server_sock.getsockname(), client_sock.getsockname()

        now = time.monotonic()
        client.connect(server_addr, now=now)
        first = client.datagrams_to_send(now=now)
        assert len(first) == 1
        client_sock.sendto(first[0][0], server_addr)

        data, addr = server_sock.recvfrom(65536)
        assert len(data) >= 1200  # the client pads its Initial datagram
        header = server_lib.parse_header(data)
        server = server_lib.new_connection(server_config, max_streams=options.max_streams,
                                           reset_token=lambda cid: bytes(16),
                                           original_destination_connection_id=header.destination_cid)
        server.receive_datagram(data, addr, now)
        answer = server.datagrams_to_send(now)  # raised QuicConnectionError before the workaround
        for datagram, _ in answer:
            server_sock.sendto(datagram, client_addr)

        for _ in answer:
            data, addr = client_sock.recvfrom(65536)
            client.receive_datagram(data, addr, now=now)
        kinds = []
        while (event := client.next_event()) is not None:
            kinds.append(type(event).__name__)
    assert "HandshakeCompleted" in kinds, f"the server answered {[len(d) for d, _ in answer]} bytes: {kinds}"

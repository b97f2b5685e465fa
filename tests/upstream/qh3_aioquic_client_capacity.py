"""Reproducer for qh3 (2.1.0): a qh3 server cannot answer an aioquic client's first flight.

Only the two libraries (and ``cryptography`` for throw-away certificates); no connet code.
Run: ``python tests/upstream/qh3_aioquic_client_capacity.py``. Exits 1 while either defect
below shows, 0 once both are gone.

1. aioquic pads a client's Initial datagram to 1200 bytes with zero bytes *after*
the Initial packet (RFC 9000 section 14.1 allows it; they count toward the anti-amplification
limit, section 8.1). qh3's Python facade (``QuicConnection.receive_datagram``) hands the
native core each packet of a datagram as its own slice, and the core credits the path with
the slice's length (``path.receive(bytes.len())``, src/quic/connection.rs), so the server
counts about 520 bytes instead of 1200: a budget of about 1560. It spends 1280 on its Initial
(padded to 1280), and with about 280 left ``poll_transmit`` builds a Handshake packet whose first
CRYPTO frame cannot fit: BuildError::Capacity, raised as QuicConnectionError("packet
builder capacity exhausted") instead of "nothing to send until the client sends more".

2. The second half of 1 holds with qh3 alone: ``poll_transmit`` checks the budget against a
minimal packet only, so *any* server flight that outgrows 3 x what the client sent raises
instead of waiting. A qh3 client (two 1280-byte Initial datagrams: a budget of 7680) and a
qh3 server with a chain of five RSA-4096 certificates show it.

The exchange is in memory (the sans-I/O objects, datagrams handed across): the failure is in
the server's first answer and involves no network behaviour, and this way it is exact.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration as AioquicConfiguration
from aioquic.quic.connection import QuicConnection as AioquicConnection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from qh3.quic.configuration import QuicConfiguration as Qh3Configuration
from qh3.quic.connection import QuicConnection as Qh3Connection
from qh3.quic.connection import QuicConnectionError
from qh3.quic.packet import pull_quic_header
from qh3._hazmat import Buffer
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

CLIENT_ADDR = ("127.0.0.1", 40001)
SERVER_ADDR = ("127.0.0.1", 40002)


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def aioquic_client_small_certificate() -> bool:
    """Part 1; True if the defect shows."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed(Path(tmp))
        server_config = Qh3Configuration(is_client=False, alpn_protocols=["repro"])
        server_config.load_cert_chain(str(cert), str(key))
    client_config = AioquicConfiguration(is_client=True, alpn_protocols=["repro"], server_name="localhost")
    client_config.verify_mode = 0  # ssl.CERT_NONE: the certificate is beside the point

    now = time.monotonic()
    client = AioquicConnection(configuration=client_config)
    client.connect(SERVER_ADDR, now=now)
    (first, _), = client.datagrams_to_send(now=now)
    initial_length = pull_quic_header(Buffer(data=first), host_cid_length=8).packet_length
    print(f"1. aioquic client: first datagram {len(first)} bytes, its Initial packet {initial_length} bytes, "
          f"then {len(first) - initial_length} bytes of zero padding")
    received, raised = answer(server_config, [first], now)
    if received < len(first):
        print(f"DEFECT: the server credits {received} of the {len(first)} bytes it received")
    return received < len(first) or raised


def qh3_client_long_chain() -> bool:
    """Part 2; True if the defect shows."""
    key = rsa.generate_private_key(65537, 4096)
    now_dt = datetime.datetime.now(datetime.timezone.utc)
    pems = b""
    for i in range(5):  # the same key throughout: only the size of the flight matters here
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"certificate {i}")])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now_dt - datetime.timedelta(days=1)).not_valid_after(now_dt + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        pems += cert.public_bytes(serialization.Encoding.PEM)
    chain = load_pem_x509_certificates(pems)
    server_config = Qh3Configuration(is_client=False, alpn_protocols=["repro"])
    server_config.certificate, server_config.certificate_chain = chain[0], chain[1:]
    server_config.private_key = load_pem_private_key(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    client_config = Qh3Configuration(is_client=True, alpn_protocols=["repro"], server_name="localhost")
    client_config.verify_mode = 0

    now = time.monotonic()
    client = Qh3Connection(configuration=client_config)
    client.connect(SERVER_ADDR, now=now)
    first = [data for data, _ in client.datagrams_to_send(now=now)]
    print(f"2. qh3 client: first datagrams {[len(d) for d in first]}; server chain of {len(chain)} certificates")
    _, raised = answer(server_config, first, now)
    return raised


def answer(server_config: Qh3Configuration, datagrams: list[bytes], now: float) -> tuple[int, bool]:
    """A qh3 server receives ``datagrams`` and answers: (bytes credited, poll_transmit raised)."""
    header = pull_quic_header(Buffer(data=datagrams[0]), host_cid_length=8)
    server = Qh3Connection(configuration=server_config, original_destination_connection_id=header.destination_cid)
    for data in datagrams:
        server.receive_datagram(data, CLIENT_ADDR, now=now)
    received = server._core.active_path[4]  # (id, local, remote, bytes_sent, bytes_received, pmtu)
    print(f"   qh3 server: path credited with {received} bytes received (anti-amplification budget "
          f"{3 * received}; the datagrams held {sum(map(len, datagrams))})")
    sent = []  # poll_transmit one datagram at a time, to see what left before a failure
    try:
        while (transmit := server._core.poll_transmit(now)) is not None:
            sent.append(len(transmit[0]))
    except RuntimeError as error:
        print(f"   qh3 server: sent {sent}, then poll_transmit raised RuntimeError({str(error)!r}) "
              f"with {3 * received - sum(sent)} bytes of budget left")
        try:
            server.datagrams_to_send(now=now)
        except QuicConnectionError as facade_error:
            print(f"   (through the facade: {facade_error!r})")
        print("DEFECT: poll_transmit raises instead of waiting for the client's next datagram")
        return received, True
    print(f"   qh3 server: sent {sent} without an error")
    return received, False


def main() -> int:
    defects = [aioquic_client_small_certificate(), qh3_client_long_chain()]
    print("defects shown:", [i + 1 for i, shown in enumerate(defects) if shown] or "none")
    return 1 if any(defects) else 0


if __name__ == "__main__":
    sys.exit(main())

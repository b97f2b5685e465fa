"""Certificates and identity proofs (``cryptography`` only: the core never imports aioquic).

- :func:`make_identity`: the per-run self-signed certificate of a client (or relay), which a
  dialer pins as its only trust anchor.
- :func:`write_test_certificates`: a CA and a server certificate for ``connet cert``.
- :func:`load_identity`: a configured ``cert-file``/``key-file`` pair, checked.
- :func:`sign_proof` / :func:`verify_proof`: the dialer's proof of key on a connection's
  first stream (docs/protocol.md, the identity proof).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import struct
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from connet_core.errors import ConfigError
from connet_core.files import FileRefused, read_file
from connet_core.transport import TLSIdentity

# aioquic checks validity dates with no slack: a peer whose clock is a little behind ours
# would otherwise refuse a certificate made this very second.
BACKDATE = datetime.timedelta(minutes=5)
IDENTITY_LIFETIME = datetime.timedelta(days=365)
TEST_CA_LIFETIME = datetime.timedelta(days=3650)
TEST_SERVER_LIFETIME = datetime.timedelta(days=825)

# Domain separation: a proof signature can never be mistaken for a signature made for
# any other purpose with the same key (the TLS handshake signs with it too).
_PROOF_CONTEXT = b"connet peer proof v1\x00"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _key_usage(*, cert_sign: bool, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, lifetime: datetime.timedelta,
    *, ca: bool, usage: x509.KeyUsage,
) -> x509.CertificateBuilder:
    """What every certificate here has: backdated validity, basic constraints, key usage."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage, critical=True)
    )


def make_identity(common_name: str = "connet-peer") -> tuple[TLSIdentity, bytes, ec.EllipticCurvePrivateKey]:
    """A fresh self-signed ECDSA P-256 certificate for one run.

    The certificate is usable as its own trust anchor when a dialer pins it: it is a CA
    (basicConstraints CA, keyCertSign) so OpenSSL's chain check accepts it as the anchor,
    and it names ``common_name`` in the subject alternative name, which is what hostname
    verification checks (the CN alone is ignored). A pinned dial therefore uses
    ``server_name=common_name``. Returns the PEM identity, the DER certificate and the key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key.public_key(), IDENTITY_LIFETIME, ca=True, usage=_key_usage(cert_sign=True))
        .add_extension(x509.SubjectAlternativeName(_san_entries([common_name])), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    identity = TLSIdentity(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))
    return identity, cert.public_bytes(serialization.Encoding.DER), key


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, also when the file already exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(data)


def write_test_certificates(out_dir: Path, hosts: Sequence[str]) -> dict[str, Path]:
    """Write a test CA and a server certificate it signed, for ``connet cert``.

    Files: ``ca.pem``, ``ca-key.pem``, ``server.pem``, ``server-key.pem`` (keys mode 0600).
    The server certificate names every entry of ``hosts`` (DNS names and IP literals) in
    its subject alternative name. Returns file role -> path: ``ca``, ``ca-key``, ``cert``,
    ``key``.
    """
    if not hosts:
        raise ConfigError("connet cert: give at least one host name or address")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connet test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), TEST_CA_LIFETIME, ca=True,
                 usage=_key_usage(cert_sign=True, crl_sign=True))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    server_cert = (
        _builder(server_name, ca_name, server_key.public_key(), TEST_SERVER_LIFETIME, ca=False,
                 usage=_key_usage(cert_sign=False))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = {
        "ca": out_dir / "ca.pem",
        "ca-key": out_dir / "ca-key.pem",
        "cert": out_dir / "server.pem",
        "key": out_dir / "server-key.pem",
    }
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["ca-key"], _key_pem(ca_key))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], _key_pem(server_key))
    return paths


def load_identity(cert_file: Path, key_file: Path) -> TLSIdentity:
    """Read a PEM certificate chain (leaf first) and its private key.

    Raises ConfigError with one line naming the file when it cannot be read (or is not a
    regular file of at most 1 MiB: files.py), holds no
    PEM certificate / key, or the key does not belong to the certificate.
    """
    try:
        cert_data = read_file(cert_file, "pem")
    except FileRefused as exc:
        raise ConfigError(f"cert-file {exc}") from None
    try:
        key_data = read_file(key_file, "pem")
    except FileRefused as exc:
        raise ConfigError(f"key-file {exc}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise ConfigError(f"cert-file {cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"key-file {key_file}: not an unencrypted PEM private key"
        ) from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, fmt) != chain[0].public_key().public_bytes(
        serialization.Encoding.DER, fmt
    ):
        raise ConfigError(f"key-file {key_file}: the key does not match the certificate in {cert_file}")
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return TLSIdentity(cert_pem=cert_pem, key_pem=_key_pem(key))  # type: ignore[arg-type]


def _proof_payload(nonce: bytes, listener_cert_hash: bytes, alpn: str) -> bytes:
    """Context, then each field with a 4-byte length prefix: no two inputs share a payload."""
    parts = [_PROOF_CONTEXT]
    for field in (nonce, listener_cert_hash, alpn.encode("utf-8")):
        parts.append(struct.pack(">I", len(field)))
        parts.append(field)
    return b"".join(parts)


def sign_proof(key: PrivateKey, nonce: bytes, listener_cert_hash: bytes, alpn: str) -> bytes:
    """Sign (nonce, listener certificate hash, ALPN) with the dialer's identity key."""
    payload = _proof_payload(nonce, listener_cert_hash, alpn)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(payload, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256())
    raise TypeError(f"unsupported identity key type {type(key).__name__}")


def verify_proof(cert_der: bytes, signature: bytes, nonce: bytes, listener_cert_hash: bytes, alpn: str) -> bool:
    """Whether ``signature`` is a proof made with the key of ``cert_der``. Never raises:
    any malformed input is simply not a valid proof."""
    try:
        public_key = x509.load_der_x509_certificate(cert_der).public_key()
        payload = _proof_payload(nonce, listener_cert_hash, alpn)
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, payload)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                signature, payload, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()
            )
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True

"""connet_core.certs: identities, test certificates, loading, proofs."""

from __future__ import annotations

import datetime
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connet_core.certs import load_identity, make_identity, sign_proof, verify_proof, write_test_certificates
from connet_core.errors import ConfigError


def test_identity_is_backdated_p256_and_names_its_common_name() -> None:
    identity, der, key = make_identity("peer-1")
    cert = x509.load_der_x509_certificate(der)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now - datetime.timedelta(minutes=4)
    assert cert.not_valid_after_utc >= now + datetime.timedelta(days=300)
    assert isinstance(key.curve, ec.SECP256R1)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["peer-1"]
    assert x509.load_pem_x509_certificate(identity.cert_pem).public_bytes(serialization.Encoding.DER) == der
    loaded_key = serialization.load_pem_private_key(identity.key_pem, password=None)
    assert loaded_key.public_key().public_numbers() == key.public_key().public_numbers()


def test_identities_are_fresh_per_call() -> None:
    _, der1, _ = make_identity()
    _, der2, _ = make_identity()
    assert der1 != der2


def test_pinned_identity_passes_aioquic_verification() -> None:
    from aioquic.tls import AlertBadCertificate, verify_certificate

    identity, der, _ = make_identity("peer-x")
    cert = x509.load_der_x509_certificate(der)
    verify_certificate(cert, [], server_name="peer-x", cadata=identity.cert_pem)
    with pytest.raises(AlertBadCertificate):
        verify_certificate(cert, [], server_name="other", cadata=identity.cert_pem)
    other, _, _ = make_identity("peer-x")
    with pytest.raises(AlertBadCertificate):
        verify_certificate(cert, [], server_name="peer-x", cadata=other.cert_pem)


def test_write_test_certificates(tmp_path: Path) -> None:
    from aioquic.tls import verify_certificate

    paths = write_test_certificates(tmp_path / "certs", ["localhost", "127.0.0.1", "::1"])
    assert {p.name for p in paths.values()} == {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem"}
    for name in ("ca-key", "key"):
        assert stat.S_IMODE(paths[name].stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    for host in ("localhost", "127.0.0.1", "::1"):
        verify_certificate(server, [], server_name=host, cafile=str(paths["ca"]))
    identity = load_identity(paths["cert"], paths["key"])
    assert identity.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_write_test_certificates_overwrites_keys_private(tmp_path: Path) -> None:
    (tmp_path / "server-key.pem").write_text("old")
    (tmp_path / "server-key.pem").chmod(0o644)
    paths = write_test_certificates(tmp_path, ["localhost"])
    assert stat.S_IMODE(paths["key"].stat().st_mode) == 0o600


def test_load_identity_errors_name_the_file(tmp_path: Path) -> None:
    paths = write_test_certificates(tmp_path, ["localhost"])
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="nope.pem"):
        load_identity(missing, paths["key"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="garbage.pem") as err:
        load_identity(garbage, paths["key"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="garbage.pem"):
        load_identity(paths["cert"], garbage)
    # the CA key does not belong to the server certificate
    with pytest.raises(ConfigError, match="does not match"):
        load_identity(paths["cert"], paths["ca-key"])


def test_proof_round_trip_and_every_field_matters() -> None:
    _, der, key = make_identity()
    nonce, listener_hash, alpn = b"n" * 32, hashlib.sha256(b"listener").digest(), "connet-peer/1"
    signature = sign_proof(key, nonce, listener_hash, alpn)
    assert verify_proof(der, signature, nonce, listener_hash, alpn)
    assert not verify_proof(der, signature, b"m" * 32, listener_hash, alpn)
    assert not verify_proof(der, signature, nonce, hashlib.sha256(b"other").digest(), alpn)
    assert not verify_proof(der, signature, nonce, listener_hash, "connet-relay/1")
    _, other_der, _ = make_identity()
    assert not verify_proof(other_der, signature, nonce, listener_hash, alpn)


def test_proof_fields_are_unambiguous() -> None:
    """Moving bytes from one field to the next must not keep a signature valid."""
    _, der, key = make_identity()
    signature = sign_proof(key, b"abc", b"def", "g")
    assert verify_proof(der, signature, b"abc", b"def", "g")
    assert not verify_proof(der, signature, b"ab", b"cdef", "g")
    assert not verify_proof(der, signature, b"abcd", b"ef", "g")


@pytest.mark.parametrize(
    "cert_der, signature",
    [(b"", b""), (b"\x30\x03garbage", b"sig"), (None, b"\x00" * 70), (None, b"")],
)
def test_verify_proof_never_raises(cert_der: bytes | None, signature: bytes) -> None:
    if cert_der is None:
        _, cert_der, _ = make_identity()
    assert verify_proof(cert_der, signature, b"n", b"h", "a") is False
    assert verify_proof(cert_der, signature, b"n", b"h", "\udcff") is False

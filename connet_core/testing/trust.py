"""The certificate side of a memory dial, and the certificates tests make for it.

There is no TLS handshake here, so a dial checks the listener's certificate against
``Trust`` as a TLS stack would (pin, CA file, subject alternative name, validity): a dial
whose trust real QUIC would refuse is refused here too.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID

from connet_core.errors import DialError, TransportError
from connet_core.model import HostPort
from connet_core.transport import TLSIdentity, Trust

__all__ = ["make_test_certificate"]


def _leaf_der(identity: TLSIdentity) -> bytes:
    try:
        chain = x509.load_pem_x509_certificates(identity.cert_pem)
    except ValueError as exc:
        raise TransportError(f"the TLS identity's certificate is not valid PEM: {exc}") from None
    return chain[0].public_bytes(Encoding.DER)


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    if leaf == ca:
        return True
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _names_match(leaf: x509.Certificate, server_name: str) -> bool:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False  # like modern TLS stacks: the common name is not checked
    try:
        wanted_ip = ipaddress.ip_address(server_name)
    except ValueError:
        wanted_ip = None
    if wanted_ip is not None:
        return wanted_ip in san.get_values_for_type(x509.IPAddress)
    wanted = server_name.lower().rstrip(".")
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _check_trust(listener_der: bytes, trust: Trust, address: HostPort) -> None:
    """Raise DialError unless ``trust`` accepts the listener's certificate."""
    leaf = x509.load_der_x509_certificate(listener_der)
    if trust.pinned_der is not None:
        if trust.pinned_der != listener_der:
            raise DialError(f"dial {address}: the certificate is not the pinned one")
    elif trust.cafile is not None:
        try:
            cas = x509.load_pem_x509_certificates(Path(trust.cafile).read_bytes())
        except OSError as exc:
            raise DialError(f"dial {address}: CA file {trust.cafile} cannot be read: {exc.strerror}") from None
        except ValueError:
            raise DialError(f"dial {address}: CA file {trust.cafile} holds no PEM certificate") from None
        if not any(_issued_by(leaf, ca) for ca in cas):
            raise DialError(f"dial {address}: the certificate is not signed by a CA in {trust.cafile}")
    else:
        raise DialError(f"dial {address}: the memory transport has no default trust store (pin or give cafile)")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise DialError(f"dial {address}: the certificate is outside its validity period")
    if trust.server_name is not None and not _names_match(leaf, trust.server_name):
        raise DialError(f"dial {address}: the certificate does not name {trust.server_name!r}")


def make_test_certificate(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[TLSIdentity, bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for tests that names ``name`` in its subject alternative name: self-signed
    (and a CA) without ``issuer``, else signed by ``issuer`` (certificate, key). Returns the
    PEM identity, the DER certificate, the certificate and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, signing_key = (subject, key) if issuer is None else (issuer[0].subject, issuer[1])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    identity = TLSIdentity(
        cert_pem=cert.public_bytes(Encoding.PEM),
        key_pem=key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    )
    return identity, cert.public_bytes(Encoding.DER), cert, key

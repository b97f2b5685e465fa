"""qh3: a server certificate that *is* one of the configured CA certificates.

qh3 verifies chains with rustls-webpki, which refuses a certificate marked ``CA:TRUE`` as
the end entity (``Error::CaUsedAsEndEntity``; qh3's ``src/certificate.rs`` maps every error
it does not name to "the server certificate is unacceptable", TLS alert 0x2a). That is
what ``openssl req -x509`` makes by default, and what connet's testing flow hands the
clients as ``server-cas``: aioquic (OpenSSL's rules) accepts it, qh3 did not.

A leaf byte-identical to a configured CA certificate needs no chain: it is itself the
trust anchor, and the handshake's CertificateVerify (still checked by qh3) proves the
server holds its key. So for exactly that case the chain check is skipped and what aioquic
checks besides the chain is checked here: the validity dates and the server name
(service_identity, as aioquic). Any other leaf goes through qh3's verification unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from typing import Any

import service_identity
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from qh3 import tls


def anchors_der(cadata: bytes | None) -> frozenset[bytes]:
    """The DER encodings of the CA certificates in ``cadata`` (PEM)."""
    if not cadata:
        return frozenset()
    try:
        return frozenset(cert.public_bytes(Encoding.DER) for cert in x509.load_pem_x509_certificates(cadata))
    except ValueError:
        return frozenset()  # qh3's own verification reports what is wrong with it


def check_exact_leaf(der: bytes, server_name: str | None) -> None:
    """Dates and name of a leaf that is a trust anchor itself; raises a TLS alert."""
    certificate = x509.load_der_x509_certificate(der)
    now = datetime.datetime.now(datetime.timezone.utc)
    if now < certificate.not_valid_before_utc:
        raise tls.AlertCertificateExpired("Certificate is not valid yet")
    if now > certificate.not_valid_after_utc:
        raise tls.AlertCertificateExpired("Certificate is no longer valid")
    if server_name is None:
        return
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        verify = service_identity.cryptography.verify_certificate_hostname
    else:
        verify = service_identity.cryptography.verify_certificate_ip_address
    try:
        verify(certificate, server_name)
    except ValueError as exc:
        raise tls.AlertBadCertificate("Certificate extensions could not be parsed") from exc
    except (service_identity.CertificateError, service_identity.VerificationError) as exc:
        patterns = ", ".join(repr(p) for p in service_identity.cryptography.extract_patterns(certificate))
        raise tls.AlertBadCertificate(f"hostname {server_name!r} doesn't match {patterns or exc}") from exc


class ExactLeafContext(tls.Context):
    """qh3's TLS context, accepting a leaf that is exactly one of ``connet_anchors``."""

    connet_anchors: frozenset[bytes] = frozenset()

    def _client_handle_certificate_verify(self, input_buf: Any) -> None:
        leaf = self._peer_certificate
        if self._verify_mode == ssl.CERT_NONE or leaf is None or leaf.public_bytes() not in self.connet_anchors:
            super()._client_handle_certificate_verify(input_buf)
            return
        check_exact_leaf(leaf.public_bytes(), self._server_name if self._verify_hostname else None)
        # the rest (the CertificateVerify signature, a pinned fingerprint) as qh3 does it,
        # without the chain check that refuses this leaf
        mode, self._verify_mode = self._verify_mode, ssl.CERT_NONE
        try:
            super()._client_handle_certificate_verify(input_buf)
        finally:
            self._verify_mode = mode


def accept_exact_anchors(context: tls.Context, cadata: bytes | None, *, is_client: bool) -> None:
    """Make a client context (qh3 built it) accept a leaf identical to a CA in ``cadata``."""
    anchors = anchors_der(cadata)
    if anchors and is_client:
        context.__class__ = ExactLeafContext  # same fields, one method more: built by qh3's bridge
        context.connet_anchors = anchors  # type: ignore[attr-defined]

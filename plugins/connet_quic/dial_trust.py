"""What a dial trusts, from a :class:`connet_core.transport.Trust`: the same for the QUIC
handshake and for the outer TLS of a TCP pipe (:mod:`connet_quic.tcp_pipe`)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connet_core.errors import DialError
from connet_core.files import FileRefused, read_file
from connet_core.model import HostPort
from connet_core.transport import Trust


def trust_anchors(trust: Trust, address: HostPort) -> tuple[bytes | None, str | None]:
    """``(cadata, server_name)``: PEM anchors (None: the default bundle) and the name to
    check. Pinned: the pin is the only anchor and the name is checked only when given; a CA
    file: its PEM, and the dialed host by default. Raises DialError."""
    if trust.pinned_der is not None:
        try:
            return x509.load_der_x509_certificate(trust.pinned_der).public_bytes(Encoding.PEM), trust.server_name
        except ValueError:
            raise DialError(f"dial {address}: the pinned certificate is not valid DER") from None
    cadata = None
    if trust.cafile is not None:
        try:
            cadata = read_file(trust.cafile, "pem")  # never a FIFO or /dev/zero: files.py
            x509.load_pem_x509_certificates(cadata)
        except FileRefused as exc:
            raise DialError(f"dial {address}: CA file {exc}") from None
        except ValueError:
            raise DialError(f"dial {address}: CA file {trust.cafile} holds no PEM certificate") from None
    return cadata, trust.server_name or address.host

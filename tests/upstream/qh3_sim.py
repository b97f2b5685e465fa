"""A sans-I/O network for two qh3 connections: qh3 alone, no connet code, simulated time.

Datagrams travel with a delay drawn from ``delay`` (seconds; a range reorders them) and
are lost with probability ``loss``. The client opens ``streams`` bidirectional streams
(qh3's default peer limit is 100) and writes 111 bytes on each; with ``fin_later`` the
FINs follow as separate zero-length writes once the server has every stream's data,
otherwise each write carries its FIN. The server answers each stream's FIN with 11 bytes
and its own FIN. ``run`` returns "ok", or what went wrong: an exception from qh3
(``ValueError: reserved stream is missing``), or ``"stalled"`` when the connection went
idle with streams unfinished (every datagram was delivered or counted lost, nothing is
left in flight on either side, and qh3 closes it at its idle timeout).
"""

from __future__ import annotations

import datetime
import heapq
import random
import ssl
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from qh3._hazmat import Buffer
from qh3.quic import events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.packet import pull_quic_header
from qh3.tls import load_pem_private_key, load_pem_x509_certificates

CLIENT, SERVER = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
IDLE_TIMEOUT = 30.0  # simulated seconds


def _identity() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


_CERT, _KEY = _identity()


def run(seed: int, *, streams: int = 100, fin_later: bool = False, loss: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.02),
        new_connection: Callable[..., QuicConnection] = QuicConnection) -> str:
    rnd = random.Random(seed)
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["sim"], verify_mode=ssl.CERT_NONE,
                                      idle_timeout=IDLE_TIMEOUT)
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["sim"], idle_timeout=IDLE_TIMEOUT)
    server_config.certificate = load_pem_x509_certificates(_CERT)[0]
    server_config.private_key = load_pem_private_key(_KEY)
    now = 0.0
    client = new_connection(configuration=client_config)
    server: QuicConnection | None = None
    client.connect(SERVER, now)
    wire: list[tuple[float, int, str, bytes]] = []  # (arrival, order, to, datagram)
    order = 0
    received: dict[int, bytearray] = {}
    server_ended: set[int] = set()
    answered: set[int] = set()
    fins_sent = False

    def send(connection: QuicConnection, to: str) -> None:
        nonlocal order
        for data, _ in connection.datagrams_to_send(now):
            if rnd.random() >= loss:
                order += 1
                heapq.heappush(wire, (now + rnd.uniform(*delay), order, to, data))

    try:
        while len(answered) < streams:
            send(client, "server")
            if server is not None:
                send(server, "client")
            timers = [t for t in (client.get_timer(), server.get_timer() if server else None) if t is not None]
            due = min([wire[0][0]] + timers if wire else timers, default=None)
            if due is None:
                return "stalled"
            now = max(now, due)
            if wire and wire[0][0] <= now:
                _, _, to, data = heapq.heappop(wire)
                if to == "server":
                    if server is None:
                        header = pull_quic_header(Buffer(data=data), host_cid_length=8)
                        server = new_connection(configuration=server_config,
                                                original_destination_connection_id=header.destination_cid)
                    server.receive_datagram(data, CLIENT, now)
                else:
                    client.receive_datagram(data, SERVER, now)
            for connection in (client, server):
                if connection is not None and (timer := connection.get_timer()) is not None and timer <= now:
                    connection.handle_timer(now)
            while (event := client.next_event()) is not None:
                if isinstance(event, events.HandshakeCompleted):
                    for i in range(streams):
                        stream_id = client.get_next_available_stream_id()
                        client.send_stream_data(stream_id, b"stream %04d" % i + b"." * 100, end_stream=not fin_later)
                elif isinstance(event, events.StreamDataReceived) and event.end_stream:
                    answered.add(event.stream_id)
                elif isinstance(event, events.ConnectionTerminated):
                    return "stalled" if event.reason_phrase == "Idle timeout" else f"closed: {event.reason_phrase}"
            while server is not None and (event := server.next_event()) is not None:
                if isinstance(event, events.StreamDataReceived):
                    received.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if event.end_stream:
                        server_ended.add(event.stream_id)
                        server.send_stream_data(event.stream_id, bytes(received[event.stream_id][:11]),
                                                end_stream=True)
                    if fin_later and not fins_sent and len(received) == streams and all(
                            len(data) >= 111 for data in received.values()):
                        fins_sent = True
                        for stream_id in received:
                            client.send_stream_data(stream_id, b"", end_stream=True)
                elif isinstance(event, events.ConnectionTerminated):
                    return "stalled" if event.reason_phrase == "Idle timeout" else f"closed: {event.reason_phrase}"
    except ValueError as exc:
        return f"ValueError: {exc}"
    return "ok"


def main(description: str, defect: str, **kwargs: object) -> int:
    """Run seeds from argv (first, last); exit 1 if any run shows ``defect``."""
    import sys

    first, last = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (0, 2000)
    outcomes: dict[str, list[int]] = {}
    for seed in range(first, last):
        outcomes.setdefault(run(seed, **kwargs), []).append(seed)  # type: ignore[arg-type]
    print(description)
    for outcome, seeds in sorted(outcomes.items()):
        print(f"  {outcome}: {len(seeds)} of {last - first} runs (seeds {seeds[:8]}{' ...' if len(seeds) > 8 else ''})")
    return 1 if any(defect in outcome for outcome in outcomes) else 0

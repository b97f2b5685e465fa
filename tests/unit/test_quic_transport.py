"""The QUIC transport plugin over real UDP on loopback: both roles on the same endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import socket
from pathlib import Path
from typing import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import connet_quic
from connet_core.certs import make_identity, write_test_certificates
from connet_core.errors import ConnectionLost, DialError, StreamReset
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.transport import TLSIdentity, Trust, TransportOptions
from connet_quic import QuicEndpoint, QuicTransport
from connet_quic._aioquic import AioquicLibrary

ALPN = "connet-test/1"
LOOPBACK = "127.0.0.1"


class Peer:
    """An endpoint with its own identity, as a client would have."""

    def __init__(self, endpoint: QuicEndpoint, name: str, der: bytes) -> None:
        self.endpoint = endpoint
        self.name = name
        self.der = der

    @property
    def addr(self) -> HostPort:
        return HostPort(LOOPBACK, self.endpoint.local_address.port)

    def trust(self) -> Trust:
        return Trust(server_name=self.name, pinned_der=self.der)


@contextlib.asynccontextmanager
async def peers(
    count: int = 2,
    options: TransportOptions = TransportOptions(),
    transport: QuicTransport | None = None,
    host: str = LOOPBACK,
) -> AsyncIterator[list[Peer]]:
    transport = transport or QuicTransport()
    made: list[Peer] = []
    try:
        for i in range(count):
            identity, der, _ = make_identity(f"peer-{i}")
            endpoint = await transport.bind(HostPort(host, 0), identity=identity, alpns=[ALPN], options=options)
            made.append(Peer(endpoint, f"peer-{i}", der))
        yield made
    finally:
        for peer in made:
            await peer.endpoint.close()


async def connect(a: Peer, b: Peer) -> tuple[connet_quic.QuicEndpointConnection, connet_quic.QuicEndpointConnection]:
    dialed = await a.endpoint.dial(b.addr, alpn=ALPN, trust=b.trust())
    accepted = await asyncio.wait_for(b.endpoint.accept(), 5)
    return dialed, accepted


async def read_all(stream: connet_quic.QuicEndpointStream) -> bytes:
    out = bytearray()
    while chunk := await stream.read():
        out += chunk
    return bytes(out)


async def write_all(stream: connet_quic.QuicEndpointStream, data: bytes, chunk: int = 65536) -> None:
    for i in range(0, len(data), chunk):
        await stream.write(data[i : i + chunk])
    await stream.write_eof()


def test_hooks_provide_aioquic_only() -> None:
    assert list(connet_quic.connet_transport_names()) == ["aioquic"]
    transport = connet_quic.connet_transport("aioquic")
    assert isinstance(transport, QuicTransport) and transport.name == "aioquic"
    assert connet_quic.connet_transport("other") is None


async def test_pinned_dial_and_accept() -> None:
    async with peers() as (a, b):
        dialed, accepted = await connect(a, b)
        assert dialed.is_dialer and not accepted.is_dialer
        assert dialed.alpn == accepted.alpn == ALPN
        assert dialed.peer_certificate == b.der
        assert accepted.peer_certificate is None
        assert dialed.remote_address == b.addr
        assert accepted.remote_address == a.addr
        stream = await dialed.open_stream()
        await stream.write(b"ping")
        incoming = await accepted.accept_stream()
        assert await incoming.read() == b"ping"
        await incoming.write(b"pong")
        await incoming.write_eof()
        assert await read_all(stream) == b"pong"
        stats = dialed.stats()
        assert stats.bytes_sent > 0 and stats.bytes_received > 0
        assert stats.smoothed_rtt is not None and 0 < stats.smoothed_rtt < 1


async def test_dial_with_ca(tmp_path: Path) -> None:
    paths = write_test_certificates(tmp_path, ["localhost", LOOPBACK, "::1"])
    identity = TLSIdentity(paths["cert"].read_bytes(), paths["key"].read_bytes())
    transport = QuicTransport()
    server = await transport.bind(HostPort(LOOPBACK, 0), identity=identity, alpns=[ALPN])
    client = await transport.bind(HostPort(LOOPBACK, 0), identity=None, alpns=[])
    try:
        target = HostPort(LOOPBACK, server.local_address.port)
        conn = await client.dial(target, alpn=ALPN, trust=Trust(cafile=paths["ca"]))
        assert conn.peer_certificate is not None
        await server.accept()
        conn2 = await client.dial(target, alpn=ALPN, trust=Trust(cafile=paths["ca"], server_name="localhost"))
        await server.accept()
        assert not conn2.closed
        with pytest.raises(DialError):
            await client.dial(target, alpn=ALPN, trust=Trust(cafile=paths["ca"], server_name="example.com"))
        with pytest.raises(DialError):  # the default trust store does not know our test CA
            await client.dial(target, alpn=ALPN, trust=Trust(server_name="localhost"))
        with pytest.raises(DialError, match="CA file"):
            await client.dial(target, alpn=ALPN, trust=Trust(cafile=tmp_path / "missing.pem"))
    finally:
        await client.close()
        await server.close()


async def test_pinned_mismatch_is_refused() -> None:
    async with peers(3) as (a, b, c):
        with pytest.raises(DialError):
            await a.endpoint.dial(b.addr, alpn=ALPN, trust=c.trust())


async def test_pin_is_an_exact_match_not_a_trust_anchor() -> None:
    """A certificate signed by the pinned one chains to it, and must still be refused."""
    _, pinned_der, pinned_key = make_identity("peer-x")
    pinned = x509.load_der_x509_certificate(pinned_der)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(pinned.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("peer-x")]), critical=False)
        .sign(pinned_key, hashes.SHA256())
    )
    identity = TLSIdentity(
        leaf.public_bytes(serialization.Encoding.PEM),
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    transport = QuicTransport()
    server = await transport.bind(HostPort(LOOPBACK, 0), identity=identity, alpns=[ALPN])
    client = await transport.bind(HostPort(LOOPBACK, 0), identity=None, alpns=[])
    try:
        target = HostPort(LOOPBACK, server.local_address.port)
        with pytest.raises(DialError, match="pinned"):
            await client.dial(target, alpn=ALPN, trust=Trust(server_name="peer-x", pinned_der=pinned_der))
    finally:
        await client.close()
        await server.close()


async def test_alpn_mismatch_is_refused() -> None:
    async with peers() as (a, b):
        with pytest.raises(DialError):
            await a.endpoint.dial(b.addr, alpn="connet-other/1", trust=b.trust())
        # and the listener accepted nothing: the next accepted connection is a good one
        await a.endpoint.dial(b.addr, alpn=ALPN, trust=b.trust())
        accepted = await asyncio.wait_for(b.endpoint.accept(), 5)
        assert accepted.alpn == ALPN


async def test_simultaneous_dials_from_the_same_sockets() -> None:
    async with peers() as (a, b):
        a_to_b, b_to_a = await asyncio.gather(
            a.endpoint.dial(b.addr, alpn=ALPN, trust=b.trust()),
            b.endpoint.dial(a.addr, alpn=ALPN, trust=a.trust()),
        )
        at_b = await asyncio.wait_for(b.endpoint.accept(), 5)
        at_a = await asyncio.wait_for(a.endpoint.accept(), 5)
        for dialed, accepted, text in ((a_to_b, at_b, b"a->b"), (b_to_a, at_a, b"b->a")):
            stream = await dialed.open_stream()
            await stream.write(text)
            await stream.write_eof()
            incoming = await accepted.accept_stream()
            assert await read_all(incoming) == text
            await incoming.write(text[::-1])
            await incoming.write_eof()
            assert await read_all(stream) == text[::-1]


async def test_dual_stack_bind_reports_ipv4_peers_as_ipv4() -> None:
    async with peers(1, host="") as (listener,), peers(1) as (dialer,):
        conn = await dialer.endpoint.dial(listener.addr, alpn=ALPN, trust=listener.trust())
        accepted = await asyncio.wait_for(listener.endpoint.accept(), 5)
        assert accepted.remote_address == dialer.addr
        # and the dual-stack endpoint dials IPv4 peers too (the client side of the mapping)
        back = await listener.endpoint.dial(dialer.addr, alpn=ALPN, trust=dialer.trust())
        assert back.remote_address == dialer.addr
        await asyncio.wait_for(dialer.endpoint.accept(), 5)
        assert not conn.closed


async def test_eight_mib_both_ways() -> None:
    async with peers() as (a, b):
        dialed, accepted = await connect(a, b)
        up, down = os.urandom(8 * 1024 * 1024), os.urandom(8 * 1024 * 1024)
        stream = await dialed.open_stream()

        async def listener_side() -> bytes:
            incoming = await accepted.accept_stream()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(write_all(incoming, down))
                received = tg.create_task(read_all(incoming))
            return received.result()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(write_all(stream, up))
            got_down = tg.create_task(read_all(stream))
            got_up = tg.create_task(listener_side())
        assert hashlib.sha256(got_up.result()).digest() == hashlib.sha256(up).digest()
        assert hashlib.sha256(got_down.result()).digest() == hashlib.sha256(down).digest()


async def test_thousand_concurrent_streams() -> None:
    count = 1000
    async with peers() as (a, b):
        dialed, accepted = await connect(a, b)
        streams = [await dialed.open_stream() for _ in range(count)]
        for i, stream in enumerate(streams):
            await stream.write(f"stream {i:04d}".encode() + b"." * 100)
        # every stream is still open (no FIN yet): the peer sees all of them at once
        seen: dict[bytes, connet_quic.QuicEndpointStream] = {}

        async def accept_all() -> None:
            while len(seen) < count:
                incoming = await accepted.accept_stream()
                first = b""
                while len(first) < 111:  # the whole first write, however it was packetized
                    first += await incoming.read(111 - len(first))
                seen[first.split(b".", 1)[0]] = incoming

        await asyncio.wait_for(accept_all(), 20)
        assert set(seen) == {f"stream {i:04d}".encode() for i in range(count)}
        for stream in streams:
            await stream.write_eof()

        async def finish(key: bytes, incoming: connet_quic.QuicEndpointStream) -> None:
            assert await read_all(incoming) == b""  # only the FIN was left
            await incoming.write(key)
            await incoming.write_eof()

        async with asyncio.TaskGroup() as tg:
            for key, incoming in seen.items():
                tg.create_task(finish(key, incoming))
        replies = await asyncio.wait_for(asyncio.gather(*(read_all(s) for s in streams)), 20)
        assert replies == [f"stream {i:04d}".encode() for i in range(count)]


async def test_a_writer_to_a_reader_that_does_not_read_blocks() -> None:
    stream_window, send_buffer, chunk = 256 * 1024, 64 * 1024, 32 * 1024
    transport = QuicTransport("aioquic", AioquicLibrary(stream_window=stream_window, connection_window=1024 * 1024))
    options = TransportOptions(stream_send_buffer=send_buffer)
    async with peers(options=options, transport=transport) as (a, b):
        dialed, accepted = await connect(a, b)
        stream = await dialed.open_stream()
        payload = os.urandom(4 * 1024 * 1024)
        written = 0
        blocked = False
        # write until a write does not return: the reader's window is full and our unsent
        # buffer is above its bound
        while written < len(payload):
            try:
                await asyncio.wait_for(stream.write(payload[written : written + chunk]), 1.0)
            except TimeoutError:
                blocked = True
                written += chunk  # wait_for cancelled the wait, not the queued data
                break
            written += chunk
        assert blocked, "write never blocked"
        assert written <= stream_window + send_buffer + 2 * chunk
        incoming = await accepted.accept_stream()
        assert accepted._quic.unread_total <= stream_window
        # once the reader reads, the writer goes on and everything arrives intact
        async with asyncio.TaskGroup() as tg:
            tg.create_task(write_all(stream, payload[written:], chunk))
            received = tg.create_task(read_all(incoming))
        assert received.result() == payload


async def test_connection_window_bounds_unread_data_of_all_streams() -> None:
    transport = QuicTransport("aioquic", AioquicLibrary(stream_window=256 * 1024, connection_window=512 * 1024))
    async with peers(transport=transport, options=TransportOptions(stream_send_buffer=32 * 1024)) as (a, b):
        dialed, accepted = await connect(a, b)
        streams = [await dialed.open_stream() for _ in range(8)]
        stalled = 0
        for stream in streams:
            try:
                await asyncio.wait_for(stream.write(os.urandom(256 * 1024)), 0.3)
            except TimeoutError:
                stalled += 1
        assert stalled >= 4  # 8 x 256 KiB cannot fit a 512 KiB connection window
        assert accepted._quic.unread_total <= 512 * 1024


async def test_close_code_reaches_the_peer() -> None:
    async with peers() as (a, b):
        dialed, accepted = await connect(a, b)
        stream = await dialed.open_stream()
        await stream.write(b"x")
        incoming = await accepted.accept_stream()
        assert await incoming.read() == b"x"
        pending_read = asyncio.create_task(incoming.read())
        try:
            dialed.close(CloseCode.FORBIDDEN, "go away")
            info = await asyncio.wait_for(accepted.wait_closed(), 2)
            assert (info.code, info.reason, info.by_peer) == (CloseCode.FORBIDDEN, "go away", True)
            with pytest.raises(ConnectionLost) as lost:
                await asyncio.wait_for(pending_read, 2)
            assert lost.value.code == CloseCode.FORBIDDEN and lost.value.by_peer
        finally:
            pending_read.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await pending_read
        mine = await dialed.wait_closed()
        assert (mine.code, mine.by_peer) == (CloseCode.FORBIDDEN, False)
        with pytest.raises(ConnectionLost):
            await stream.write(b"more")
        with pytest.raises(ConnectionLost):
            await dialed.open_stream()


async def test_endpoint_close_closes_its_connections() -> None:
    transport = QuicTransport()
    identity, der, _ = make_identity("peer-b")
    a = await transport.bind(HostPort(LOOPBACK, 0), identity=None, alpns=[])
    b = await transport.bind(HostPort(LOOPBACK, 0), identity=identity, alpns=[ALPN])
    try:
        dialed = await a.dial(
            HostPort(LOOPBACK, b.local_address.port), alpn=ALPN, trust=Trust(server_name="peer-b", pinned_der=der)
        )
        await b.accept()
        await b.close(CloseCode.SHUTDOWN)
        info = await asyncio.wait_for(dialed.wait_closed(), 2)
        assert (info.code, info.by_peer) == (CloseCode.SHUTDOWN, True)
        with pytest.raises(ConnectionLost):
            await b.accept()
    finally:
        await a.close()
        await b.close()


async def test_stream_reset_reaches_the_peer() -> None:
    async with peers() as (a, b):
        dialed, accepted = await connect(a, b)
        stream = await dialed.open_stream()
        await stream.write(b"hello")
        incoming = await accepted.accept_stream()
        assert await incoming.read() == b"hello"
        stream.reset(CloseCode.DESTINATION_UNREACHABLE)
        with pytest.raises(StreamReset) as reset:
            await asyncio.wait_for(incoming.read(), 2)
        assert reset.value.code == CloseCode.DESTINATION_UNREACHABLE

        # STOP_SENDING makes the peer's writes fail too
        async def write_until_reset() -> None:
            while True:
                await incoming.write(b"x" * 1024)

        with pytest.raises(StreamReset):
            await asyncio.wait_for(write_until_reset(), 2)
        # the connection itself is fine
        other = await dialed.open_stream()
        await other.write(b"still here")
        assert await (await accepted.accept_stream()).read() == b"still here"


async def test_idle_timeout_notices_a_dead_path() -> None:
    options = TransportOptions(idle_timeout=1.0, keepalive_interval=0.3)
    async with peers(options=options) as (a, b):
        dialed, accepted = await connect(a, b)
        # keepalive holds an idle connection up well past the idle timeout
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(dialed.wait_closed()), 2.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        a.endpoint.set_datagram_filter(lambda peer, outgoing: peer != b.addr)
        info = await asyncio.wait_for(dialed.wait_closed(), options.idle_timeout + 2)
        assert loop.time() - start <= options.idle_timeout + 1.0 + 0.5
        assert (info.code, info.by_peer) == (CloseCode.TIMEOUT, False)
        other = await asyncio.wait_for(accepted.wait_closed(), 3)
        assert other.code == CloseCode.TIMEOUT


async def test_handshake_timeout_to_a_silent_address() -> None:
    options = TransportOptions(handshake_timeout=0.8)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOPBACK, 0))
    try:
        async with peers(1, options=options) as (a,):
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(DialError, match="timed out"):
                await a.endpoint.dial(
                    HostPort(LOOPBACK, silent.getsockname()[1]), alpn=ALPN, trust=Trust(pinned_der=a.der)
                )
            assert 0.7 <= loop.time() - start <= options.handshake_timeout + 0.5
            # an explicit dial timeout wins over the option
            start = loop.time()
            with pytest.raises(DialError):
                await a.endpoint.dial(
                    HostPort(LOOPBACK, silent.getsockname()[1]), alpn=ALPN, trust=Trust(pinned_der=a.der), timeout=0.2
                )
            assert loop.time() - start <= 0.6
    finally:
        silent.close()


async def test_half_open_accepted_handshakes_are_dropped() -> None:
    options = TransportOptions(handshake_timeout=0.6)
    async with peers(options=options) as (a, b):
        # a never hears b, and goes silent once b made its side of the handshake (so that
        # a's own handshake timeout does not tell b): b's side stays half open
        created: list[connet_quic.QuicEndpointConnection] = []
        a.endpoint.set_datagram_filter(lambda peer, outgoing: outgoing and not created)
        accept_initial = b.endpoint._accept_initial

        def recording(header: object, addr: tuple[str, int]) -> connet_quic.QuicEndpointConnection | None:
            connection = accept_initial(header, addr)
            if connection is not None:
                created.append(connection)
            return connection

        b.endpoint._accept_initial = recording  # type: ignore[method-assign]
        with pytest.raises(DialError):
            await a.endpoint.dial(b.addr, alpn=ALPN, trust=b.trust())
        assert created
        info = await asyncio.wait_for(created[0].wait_closed(), 2)
        assert info.code == CloseCode.TIMEOUT
        assert not b.endpoint._pending_accepts


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback here")
async def test_ipv6_dial() -> None:
    async with peers(host="::1") as (a, b):
        target = HostPort("::1", b.endpoint.local_address.port)
        dialed = await a.endpoint.dial(target, alpn=ALPN, trust=b.trust())
        accepted = await asyncio.wait_for(b.endpoint.accept(), 5)
        assert dialed.remote_address == target
        assert accepted.remote_address.host == "::1"
        stream = await dialed.open_stream()
        await stream.write(b"v6")
        assert await (await accepted.accept_stream()).read() == b"v6"

"""QUIC through a TLS-over-TCP pipe (connet_quic.tcp_pipe) on loopback, per library: the
same endpoint takes UDP and pipe connections, the outer TLS is checked like QUIC's, garbage
ends a pipe with one line and the endpoint goes on."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import ssl

import pytest

import connet_quic
from connet_core.certs import make_identity
from connet_core.errors import DialError
from connet_core.model import HostPort
from connet_core.transport import Trust
from connet_quic import QuicEndpoint, QuicTransport
from connet_quic.tcp_pipe import RECORD

ALPN = "connet-test/1"
LOOPBACK = HostPort("127.0.0.1", 0)


@pytest.fixture(params=["aioquic", "qh3"])
def transport(request: pytest.FixtureRequest) -> QuicTransport:
    if request.param == "qh3" and importlib.util.find_spec("qh3") is None:
        pytest.skip("qh3 is not installed")
    made = connet_quic.connet_transport(request.param)
    assert isinstance(made, QuicTransport)
    return made


async def _pair(transport: QuicTransport) -> tuple[QuicEndpoint, HostPort, QuicEndpoint, bytes]:
    identity, der, _ = make_identity("connet-relay")
    server = await transport.bind(LOOPBACK, identity=identity, alpns=[ALPN])
    tcp = await server.listen_tcp(LOOPBACK)
    client = await transport.bind(LOOPBACK, identity=None, alpns=[])
    return server, tcp, client, der


async def _echo(server: QuicEndpoint) -> None:
    conn = await server.accept()
    stream = await conn.accept_stream()
    while data := await stream.read():
        await stream.write(data)
    await stream.write_eof()


async def test_a_stream_through_the_pipe_checksummed(transport: QuicTransport) -> None:
    server, tcp, client, der = await _pair(transport)
    try:
        echo = asyncio.create_task(_echo(server))
        conn = await client.dial_tcp(HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=Trust(pinned_der=der),
                                     timeout=5)
        assert conn.carrier == "tcp" and conn.remote_address == HostPort("127.0.0.1", tcp.port)
        payload = os.urandom(3 * 1024 * 1024)
        stream = await conn.open_stream()

        async def send() -> None:
            for at in range(0, len(payload), 65536):
                await stream.write(payload[at:at + 65536])
            await stream.write_eof()

        sender = asyncio.create_task(send())
        got = hashlib.sha256()
        size = 0
        while data := await asyncio.wait_for(stream.read(), 10):
            got.update(data)
            size += len(data)
        await sender
        await echo
        assert size == len(payload) and got.digest() == hashlib.sha256(payload).digest()
        # the server sees the TCP peer, over TCP
        assert server._by_remote and all(c.carrier == "tcp" for cs in server._by_remote.values() for c in cs)
        # UDP to the same endpoint still works beside it
        udp = await client.dial(HostPort("127.0.0.1", server.local_address.port), alpn=ALPN,
                                trust=Trust(pinned_der=der), timeout=5)
        assert udp.carrier == "udp"
        conn.close()
        # the pipe goes with the last connection over it
        await conn.wait_closed()
        for _ in range(100):
            if not client._pipes:
                break
            await asyncio.sleep(0.05)
        assert not client._pipes
    finally:
        await client.close()
        await server.close()


async def test_the_outer_tls_refuses_another_certificate(transport: QuicTransport) -> None:
    server, tcp, client, _ = await _pair(transport)
    _, other, _ = make_identity("connet-relay")
    try:
        with pytest.raises(DialError, match="over TCP: TLS failed"):
            await client.dial_tcp(HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=Trust(pinned_der=other), timeout=5)
        assert not client._pipes
    finally:
        await client.close()
        await server.close()


async def test_garbage_ends_the_pipe_with_one_line(transport: QuicTransport, caplog: pytest.LogCaptureFixture) -> None:
    server, tcp, client, der = await _pair(transport)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with caplog.at_level(logging.WARNING, "connet.quic"):
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port, ssl=ctx)
            writer.write(RECORD.pack(9000) + b"x" * 100)  # a record over the bound
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
            writer.close()
        refused = [r for r in caplog.records if "TCP pipe" in r.getMessage() and "refused" in r.getMessage()]
        assert len(refused) == 1 and "9000 bytes" in refused[0].getMessage()
        # the endpoint still serves others over the pipe
        asyncio.create_task(_echo(server))
        conn = await client.dial_tcp(HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=Trust(pinned_der=der), timeout=5)
        stream = await conn.open_stream()
        await stream.write(b"ping")
        await stream.write_eof()
        assert await asyncio.wait_for(stream.read(), 5) == b"ping"
    finally:
        await client.close()
        await server.close()


async def test_auto_falls_back_to_tcp_and_moves_back_when_udp_works(
    transport: QuicTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connet_core.client import carrier as carrier_module
    from connet_core.client.carrier import MOVED_BACK, Carrier

    monkeypatch.setattr(carrier_module, "UDP_FALLBACK_AFTER", 0.5)
    monkeypatch.setattr(carrier_module, "UDP_RETRY_INTERVAL", 0.2)
    server, tcp, client, der = await _pair(transport)
    udp_addr = HostPort("127.0.0.1", server.local_address.port)
    blocked = [True]
    client.set_datagram_filter(lambda peer, outgoing: not (blocked[0] and peer == udp_addr))
    trust = Trust(pinned_der=der)
    carrier = Carrier(client, "auto")
    try:
        conn = await carrier.dial(udp_addr, HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=trust, timeout=5)
        assert conn.carrier == "tcp"
        busy = [True]  # a relay leg carrying a tunneled connection: it does not move
        back = asyncio.create_task(carrier.back_to_udp(conn, udp_addr, alpn=ALPN, trust=trust,
                                                       idle=lambda: not busy[0]))
        await asyncio.sleep(0.5)  # tries of UDP fail while it is blocked: the leg stays
        assert not back.done() and not conn.closed
        blocked[0] = False
        await asyncio.sleep(0.7)  # UDP works now, but the leg is busy: it stays
        assert not back.done() and not conn.closed and conn.carrier == "tcp"
        busy[0] = False
        await asyncio.wait_for(back, 10)
        closed = await conn.wait_closed()
        assert closed.reason == MOVED_BACK
        again = await carrier.dial(udp_addr, HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=trust, timeout=5)
        assert again.carrier == "udp"
    finally:
        await client.close()
        await server.close()


async def test_never_goes_straight_to_tcp(transport: QuicTransport) -> None:
    from connet_core.client.carrier import Carrier

    server, tcp, client, der = await _pair(transport)
    try:
        conn = await Carrier(client, "never").dial(HostPort("127.0.0.1", server.local_address.port),
                                                   HostPort("127.0.0.1", tcp.port), alpn=ALPN,
                                                   trust=Trust(pinned_der=der), timeout=5)
        assert conn.carrier == "tcp"
    finally:
        await client.close()
        await server.close()


async def test_failed_tls_handshakes_leave_nothing_and_the_pipes_are_capped(
    transport: QuicTransport, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from connet_quic import tcp_pipe

    server, tcp, client, der = await _pair(transport)
    try:
        for _ in range(5):  # not TLS at all: the handshake fails, no pipe is left behind
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert len(server._pipes) == 0
        monkeypatch.setattr(tcp_pipe, "MAX_PIPES", 1)
        asyncio.create_task(_echo(server))
        first = await client.dial_tcp(HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=Trust(pinned_der=der), timeout=5)
        with caplog.at_level(logging.WARNING, "connet.quic"), pytest.raises(DialError):
            await client.dial_tcp(HostPort("127.0.0.1", tcp.port), alpn=ALPN, trust=Trust(pinned_der=der), timeout=2)
        assert any("TCP connections are open already" in r.getMessage() for r in caplog.records)
        assert not first.closed and len(server._pipes) == 1
    finally:
        await client.close()
        await server.close()

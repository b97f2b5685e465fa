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

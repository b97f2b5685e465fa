"""The in-memory transport of connet_core.testing behaves like the transport seam promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connet_core.errors import ConnectionLost, DialError, StreamReset, TransportError
from connet_core.model import HostPort
from connet_core.protocol.codes import CloseCode
from connet_core.testing import MemoryNetwork, make_test_certificate
from connet_core.transport import CloseInfo, Connection, Endpoint, Stream, Transport, TransportOptions, Trust

ALPN = "connet-test/1"
ANY_PORT = HostPort("", 0)


async def settle() -> None:
    """Let every ready callback run (no wall-clock wait): a task still pending after this
    is blocked on something only another party can change."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def network() -> MemoryNetwork:
    return MemoryNetwork()


@pytest.fixture
def server_cert():
    return make_test_certificate("server.test")


async def connected_pair(network: MemoryNetwork, server_cert, options: TransportOptions = TransportOptions()):
    identity, der, _, _ = server_cert
    transport = network.transport()
    server = await transport.bind(ANY_PORT, identity=identity, alpns=[ALPN], options=options)
    client = await transport.bind(ANY_PORT, identity=None, alpns=[], options=options)
    dialed = await client.dial(server.local_address, alpn=ALPN, trust=Trust(server_name="server.test", pinned_der=der))
    accepted = await server.accept()
    return server, client, dialed, accepted


async def test_objects_satisfy_the_transport_protocols(network, server_cert):
    server, client, dialed, accepted = await connected_pair(network, server_cert)
    stream = await dialed.open_stream()
    assert isinstance(network.transport(), Transport)
    assert isinstance(server, Endpoint) and isinstance(client, Endpoint)
    assert isinstance(dialed, Connection) and isinstance(accepted, Connection)
    assert isinstance(stream, Stream)


async def test_bind_allocates_unique_ports_and_refuses_a_taken_address(network):
    transport = network.transport()
    a = await transport.bind(ANY_PORT, identity=None, alpns=[])
    b = await transport.bind(HostPort("0.0.0.0", 0), identity=None, alpns=[])
    assert a.local_address != b.local_address
    assert a.local_address.port != 0 and a.local_address.host == "127.0.0.1"
    with pytest.raises(TransportError):
        await transport.bind(HostPort("localhost", a.local_address.port), identity=None, alpns=[])
    other_host = await transport.bind(HostPort("10.0.0.7", a.local_address.port), identity=None, alpns=[])
    assert other_host.local_address == HostPort("10.0.0.7", a.local_address.port)


async def test_listening_without_identity_is_refused(network):
    with pytest.raises(TransportError):
        await network.transport().bind(ANY_PORT, identity=None, alpns=[ALPN])


async def test_dial_and_accept_see_each_other(network, server_cert):
    server, client, dialed, accepted = await connected_pair(network, server_cert)
    _, der, _, _ = server_cert
    assert dialed.alpn == accepted.alpn == ALPN
    assert dialed.is_dialer and not accepted.is_dialer
    assert dialed.remote_address == server.local_address
    assert accepted.remote_address == client.local_address
    assert dialed.peer_certificate == der
    assert accepted.peer_certificate is None
    assert not dialed.closed and not accepted.closed


async def test_dial_by_localhost_alias_reaches_the_wildcard_bind(network, server_cert):
    identity, der, _, _ = server_cert
    server = await network.transport().bind(ANY_PORT, identity=identity, alpns=[ALPN])
    client = await network.transport().bind(ANY_PORT, identity=None, alpns=[])
    conn = await client.dial(
        HostPort("localhost", server.local_address.port), alpn=ALPN, trust=Trust(pinned_der=der)
    )
    assert conn.remote_address == server.local_address


async def test_dial_failures_raise_dial_error(network, server_cert, tmp_path):
    identity, der, _, _ = server_cert
    _, other_der, _, _ = make_test_certificate("server.test")
    transport = network.transport()
    server = await transport.bind(ANY_PORT, identity=identity, alpns=[ALPN])
    client = await transport.bind(ANY_PORT, identity=None, alpns=[])
    pinned = Trust(server_name="server.test", pinned_der=der)
    cases = {
        "nothing listens": (HostPort("127.0.0.1", 1), ALPN, pinned),
        "wrong alpn": (server.local_address, "other/1", pinned),
        "wrong pin": (server.local_address, ALPN, Trust(server_name="server.test", pinned_der=other_der)),
        "wrong name": (server.local_address, ALPN, Trust(server_name="elsewhere.test", pinned_der=der)),
        "no trust anchor": (server.local_address, ALPN, Trust(server_name="server.test")),
        "missing cafile": (server.local_address, ALPN, Trust(cafile=tmp_path / "absent.pem")),
    }
    for label, (address, alpn, trust) in cases.items():
        with pytest.raises(DialError):
            await client.dial(address, alpn=alpn, trust=trust)
            pytest.fail(f"dial succeeded although {label}")
    assert not server._pending, "a failed dial must not reach the listener"


async def test_cafile_trust_accepts_a_ca_signed_certificate_only(network, tmp_path: Path):
    ca_identity, _, ca_cert, ca_key = make_test_certificate("connet test CA")
    leaf_identity, _, _, _ = make_test_certificate("server.test", issuer=(ca_cert, ca_key))
    rogue_identity, _, _, _ = make_test_certificate("server.test")
    cafile = tmp_path / "ca.pem"
    cafile.write_bytes(ca_identity.cert_pem)
    transport = network.transport()
    good = await transport.bind(ANY_PORT, identity=leaf_identity, alpns=[ALPN])
    rogue = await transport.bind(ANY_PORT, identity=rogue_identity, alpns=[ALPN])
    client = await transport.bind(ANY_PORT, identity=None, alpns=[])
    trust = Trust(server_name="server.test", cafile=cafile)
    conn = await client.dial(good.local_address, alpn=ALPN, trust=trust)
    assert conn.alpn == ALPN
    with pytest.raises(DialError):
        await client.dial(rogue.local_address, alpn=ALPN, trust=trust)


async def test_stream_carries_data_then_fin(network, server_cert):
    _, _, dialed, accepted = await connected_pair(network, server_cert)
    out = await dialed.open_stream()
    await out.write(b"hello ")
    await out.write(b"world")
    await out.write_eof()
    incoming = await accepted.accept_stream()
    assert incoming.stream_id == out.stream_id
    received = b""
    while chunk := await incoming.read(4):
        assert len(chunk) <= 4
        received += chunk
    assert received == b"hello world"
    assert await incoming.read() == b""
    # the other direction still works after a half-close
    await incoming.write(b"reply")
    await incoming.write_eof()
    assert await out.read() == b"reply"
    assert await out.read() == b""
    with pytest.raises(TransportError):
        await out.write(b"late")


async def test_an_opened_stream_is_invisible_to_the_peer_until_used(network, server_cert):
    _, _, dialed, accepted = await connected_pair(network, server_cert)
    first = await dialed.open_stream()
    second = await dialed.open_stream()
    assert first.stream_id != second.stream_id
    accepting = asyncio.ensure_future(accepted.accept_stream())
    try:
        await settle()
        assert not accepting.done(), "opening a stream sends nothing in QUIC"
        await second.write(b"x")
        async with asyncio.timeout(5):
            got = await accepting
        assert got.stream_id == second.stream_id
    finally:
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)


async def test_reset_reaches_the_peer_reader_and_writer(network, server_cert):
    _, _, dialed, accepted = await connected_pair(network, server_cert)
    out = await dialed.open_stream()
    await out.write(b"unread data is discarded")
    incoming = await accepted.accept_stream()
    out.reset(CloseCode.DESTINATION_UNREACHABLE)
    with pytest.raises(StreamReset) as read_err:
        await incoming.read()
    assert read_err.value.code == CloseCode.DESTINATION_UNREACHABLE
    with pytest.raises(StreamReset) as write_err:
        await incoming.write(b"x")
    assert write_err.value.code == CloseCode.DESTINATION_UNREACHABLE
    with pytest.raises(StreamReset):
        await out.read()


async def test_close_reaches_the_peer_with_code_and_reason(network, server_cert):
    _, _, dialed, accepted = await connected_pair(network, server_cert)
    stream = await dialed.open_stream()
    await stream.write(b"before close")
    incoming = await accepted.accept_stream()
    dialed.close(CloseCode.FORBIDDEN, "not you")
    assert dialed.closed and accepted.closed
    # what had arrived stays readable, then the loss shows
    assert await incoming.read() == b"before close"
    with pytest.raises(ConnectionLost) as lost:
        await incoming.read()
    assert (lost.value.code, lost.value.reason, lost.value.by_peer) == (CloseCode.FORBIDDEN, "not you", True)
    with pytest.raises(ConnectionLost):
        await accepted.accept_stream()
    with pytest.raises(ConnectionLost) as own:
        await dialed.open_stream()
    assert own.value.by_peer is False
    assert await accepted.wait_closed() == CloseInfo(CloseCode.FORBIDDEN, "not you", by_peer=True)
    assert await dialed.wait_closed() == CloseInfo(CloseCode.FORBIDDEN, "not you", by_peer=False)


@pytest.mark.parametrize("nowait", [False, True], ids=["write", "write_nowait-and-drain"])
async def test_a_writer_waits_while_the_peer_has_too_much_unread(network, server_cert, nowait):
    options = TransportOptions(stream_send_buffer=10)
    _, _, dialed, accepted = await connected_pair(network, server_cert, options)
    out = await dialed.open_stream()
    if nowait:
        assert out.write_nowait(b"0123456789") is True  # exactly at the bound: room left
        await out.drain()  # returns at once
        assert out.write_nowait(b"abcdef") is False  # queued all the same, above the bound now
        waiting = asyncio.ensure_future(out.drain())
    else:
        await out.write(b"0123456789")  # exactly at the bound: does not wait
        waiting = asyncio.ensure_future(out.write(b"abcdef"))
    try:
        await settle()
        assert not waiting.done(), "16 unread bytes > 10: the writer must wait"
        incoming = await accepted.accept_stream()
        assert await incoming.read(8) == b"01234567"
        async with asyncio.timeout(5):
            await waiting
        assert await incoming.read() == b"89abcdef"
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


async def test_a_waiting_writer_learns_of_a_reset(network, server_cert):
    options = TransportOptions(stream_send_buffer=1)
    _, _, dialed, accepted = await connected_pair(network, server_cert, options)
    out = await dialed.open_stream()
    writing = asyncio.ensure_future(out.write(b"too much"))
    try:
        incoming = await accepted.accept_stream()
        incoming.reset(CloseCode.PROTOCOL_ERROR)
        async with asyncio.timeout(5):
            with pytest.raises(StreamReset) as err:
                await writing
        assert err.value.code == CloseCode.PROTOCOL_ERROR
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)


async def test_open_stream_waits_for_the_peer_max_streams(network, server_cert):
    options = TransportOptions(max_streams=1)
    _, _, dialed, accepted = await connected_pair(network, server_cert, options)
    first = await dialed.open_stream()
    opening = asyncio.ensure_future(dialed.open_stream())
    try:
        await settle()
        assert not opening.done()
        await first.write_eof()
        incoming = await accepted.accept_stream()
        assert await incoming.read() == b""
        await incoming.write_eof()
        assert await first.read() == b""
        async with asyncio.timeout(5):
            second = await opening
        assert second.stream_id != first.stream_id
    finally:
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)


async def test_stats_count_bytes_and_report_rtt(network, server_cert):
    server, client, dialed, accepted = await connected_pair(network, server_cert)
    out = await dialed.open_stream()
    await out.write(b"x" * 100)
    incoming = await accepted.accept_stream()
    await incoming.write(b"y" * 7)
    assert dialed.stats().bytes_sent == 100 and dialed.stats().bytes_received == 7
    assert accepted.stats().bytes_sent == 7 and accepted.stats().bytes_received == 100
    assert dialed.stats().smoothed_rtt == network.default_rtt
    network.set_rtt(server.local_address, client.local_address, 0.25)
    assert accepted.stats().smoothed_rtt == 0.25


async def test_partition_times_out_both_sides(network, server_cert):
    options = TransportOptions(idle_timeout=0.05)
    server, client, dialed, accepted = await connected_pair(network, server_cert, options)
    network.partition(client.local_address, server.local_address)
    dialed.close(CloseCode.OK, "never arrives")  # the close cannot cross the cut
    async with asyncio.timeout(5):
        info = await accepted.wait_closed()
    assert info == CloseInfo(CloseCode.TIMEOUT, "idle timeout", by_peer=False)


async def test_heal_before_the_idle_timeout_delivers_held_data(network, server_cert):
    options = TransportOptions(idle_timeout=60)
    server, client, dialed, accepted = await connected_pair(network, server_cert, options)
    network.partition(server.local_address, client.local_address)
    out = await dialed.open_stream()
    await out.write(b"held")
    accepting = asyncio.ensure_future(accepted.accept_stream())
    try:
        await settle()
        assert not accepting.done(), "nothing crosses a partition"
        network.heal(client.local_address, server.local_address)
        async with asyncio.timeout(5):
            incoming = await accepting
        assert await incoming.read() == b"held"
        assert not dialed.closed and not accepted.closed
    finally:
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)


async def test_dial_across_a_partition_fails_after_the_timeout(network, server_cert):
    identity, der, _, _ = server_cert
    server = await network.transport().bind(ANY_PORT, identity=identity, alpns=[ALPN])
    client = await network.transport().bind(ANY_PORT, identity=None, alpns=[])
    network.partition(server.local_address, client.local_address)
    with pytest.raises(DialError):
        await client.dial(server.local_address, alpn=ALPN, trust=Trust(pinned_der=der), timeout=0.01)
    network.heal(server.local_address, client.local_address)
    conn = await client.dial(server.local_address, alpn=ALPN, trust=Trust(pinned_der=der), timeout=0.01)
    assert not conn.closed


async def test_endpoint_close_closes_its_connections_and_accept(network, server_cert):
    server, client, dialed, accepted = await connected_pair(network, server_cert)
    await server.close()
    assert await dialed.wait_closed() == CloseInfo(CloseCode.OK, "endpoint closed", by_peer=True)
    assert accepted.closed
    with pytest.raises(TransportError):
        await server.accept()
    _, der, _, _ = server_cert
    with pytest.raises(DialError):
        await client.dial(server.local_address, alpn=ALPN, trust=Trust(pinned_der=der))


async def test_datagrams_arrive_whole_unless_partitioned_or_too_large(network, server_cert):
    """The memory transport's Datagrams (connet_core.transport.Datagrams), for engine tests
    of UDP tunnels: whole, refused over max_size, lost across a partition, none once closed."""
    server, client, dialed, accepted = await connected_pair(network, server_cert)
    got: list[bytes] = []
    accepted.datagrams.set_receiver(got.append)
    limit = dialed.datagrams.max_size()
    assert limit == TransportOptions().probe_datagram_size - 30
    assert dialed.datagrams.send(b"a" * limit) and not dialed.datagrams.send(b"a" * (limit + 1))
    await settle()
    assert got == [b"a" * limit]
    network.partition(client.local_address, server.local_address)
    assert dialed.datagrams.send(b"lost")  # sent, as UDP would, and lost on the way
    await settle()
    network.heal(client.local_address, server.local_address)
    dialed.close()
    assert dialed.datagrams.max_size() == 0 and not dialed.datagrams.send(b"x")
    await settle()
    assert got == [b"a" * limit]

"""Hostile bytes against the control server, the relay and a client's direct endpoint:
garbage, truncated frames, oversized length prefixes, unknown message types and valid frames
of the wrong type. Each closes its connection (or stream) with PROTOCOL_ERROR and logs a line,
while a well-behaved source/destination pair transfers a payload alongside, intact."""

from __future__ import annotations

import asyncio
import os

import msgpack
import pytest

from connet_core.errors import StreamReset
from connet_core.model import HostPort, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import frame
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    ALPN_PEER,
    Announce,
    Authenticate,
    Authenticated,
    Challenge,
    Hello,
    Proof,
    Welcome,
)
from connet_core.certs import sign_proof
from connet_core.protocol.streams import MessageStream
from connet_core.transport import Trust
from secsupport import ControlSession, Identity, bind_endpoint, control_trust, lines_matching, relay_client, start_custom_server, toml_list
from support.cluster import TOKENS, start_destination, start_source
from support.services import echo_server, exchange, sha256, wait_tunnel


def _frame_raw(obj) -> bytes:
    payload = msgpack.packb(obj)
    return len(payload).to_bytes(4, "big") + payload


# name -> (bytes to send, send FIN after them)
BAD_INPUTS = {
    "garbage": (b"\x00\x00\x00\x10" + b"\xc1" * 16, False),  # 0xc1: never valid msgpack
    "truncated": (b"\x00\x00\x00\x64" + b"\x80" * 10, True),  # 100 announced, 10 sent, FIN
    "oversized-length": (b"\xff\xff\xff\xff" + b"x" * 16, False),
    "unknown-type": (_frame_raw({"t": "no-such-message", "x": 1}), False),
    "wrong-type": (frame(Welcome()), False),
    "wrong-field-type": (_frame_raw({"t": "auth", "token": 12345}), False),
}


async def send_raw(stream, data: bytes, fin: bool) -> None:
    await stream.write(data)
    if fin:
        await stream.write_eof()


@pytest.fixture
async def world(daemons, certs):
    """``connet server`` (built-in relay), a real destination and source of "web" (echo), and
    an in-process attacker that holds a valid token and announced source "web" as identity X."""
    server = start_custom_server(daemons, certs, f"tokens = {toml_list(TOKENS)}\n")
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port)
        src, source_port = start_source(daemons, server)
        await wait_tunnel(source_port)
        endpoint = await bind_endpoint()
        session = await ControlSession.open(endpoint, server, TOKENS[2])
        x = Identity.new()
        try:
            await session.announce("web", "source", x)
            peers = await session.wait(lambda: session.latest_peers("web"))
            await session.wait(lambda: session.grant_for("web", "source"))
            relay_addr, relay_cert, grant = session.grant_for("web", "source")
            dst_cert = peers[0].certificate
            dst_addr = HostPort.parse(peers[0].addresses[0])
            # the destination must know X before X dials it
            dst.wait_for(r"peer [0-9a-f]+ matched for destination 'web'")
            yield dict(server=server, dst=dst, src=src, source_port=source_port, endpoint=endpoint, x=x,
                       relay_addr=relay_addr, relay_cert=relay_cert, grant=grant, dst_cert=dst_cert, dst_addr=dst_addr)
        finally:
            await session.close()
            await endpoint.close()


async def payload_alongside(port: int, attacks) -> None:
    """Run ``attacks`` while 4 MiB go through the tunnel; the payload must arrive intact."""
    payload = os.urandom(4 * 1024 * 1024)
    received, _ = await asyncio.gather(asyncio.wait_for(exchange(port, payload), 60), attacks)
    assert sha256(received) == sha256(payload)


async def closed_code(conn, timeout: float = 10.0) -> int:
    return (await asyncio.wait_for(conn.wait_closed(), timeout)).code


async def test_control_server_hostile_input(world) -> None:
    w = world
    endpoint, server = w["endpoint"], w["server"]
    port = endpoint.local_address.port
    control = HostPort("127.0.0.1", server.control_port)
    mark = server.daemon.mark()

    async def first_stream(name: str) -> tuple[str, int]:
        data, fin = BAD_INPUTS[name]
        conn = await endpoint.dial(control, alpn=ALPN_CONTROL, trust=control_trust(server), timeout=10)
        await send_raw(await conn.open_stream(), data, fin)
        return name, await closed_code(conn)

    async def after_auth(name: str, message) -> tuple[str, int]:
        conn = await endpoint.dial(control, alpn=ALPN_CONTROL, trust=control_trust(server), timeout=10)
        messages = MessageStream(await conn.open_stream())
        await messages.send(Authenticate(token=TOKENS[2]))
        await messages.recv(Authenticated, timeout=10)
        await messages.stream.write(frame(message))
        return name, await closed_code(conn)

    async def stalled() -> tuple[str, int]:
        """Half a frame, then silence: the first-message deadline closes it (TIMEOUT)."""
        conn = await endpoint.dial(control, alpn=ALPN_CONTROL, trust=control_trust(server), timeout=10)
        await (await conn.open_stream()).write(b"\x00\x00\x00\x64abc")
        return "stalled", await closed_code(conn, 15)

    results: dict[str, int] = {}

    async def attacks() -> None:
        outcomes = await asyncio.gather(
            *(first_stream(name) for name in BAD_INPUTS),
            after_auth("hello-after-auth", Hello(certificate=b"x")),
            after_auth("bad-role", Announce("web", "king", "any", b"x", ())),
            after_auth("empty-name", Announce("", "source", "any", b"x", ())),
            stalled(),
        )
        results.update(outcomes)

    await payload_alongside(w["source_port"], attacks())
    expected = {name: CloseCode.PROTOCOL_ERROR for name in BAD_INPUTS}
    expected.update({"hello-after-auth": CloseCode.PROTOCOL_ERROR, "bad-role": CloseCode.PROTOCOL_ERROR,
                     "empty-name": CloseCode.PROTOCOL_ERROR, "stalled": CloseCode.TIMEOUT})
    assert results == expected
    # one warning per protocol error, naming the offender
    logged = lines_matching(server.daemon, rf"WARNING connet\.control: client 127\.0\.0\.1:{port}: ", mark)
    assert len(logged) == len(expected), logged  # the stalled one too: "timed out ..."
    assert "Traceback" not in server.daemon.log()


async def test_relay_hostile_input(world) -> None:
    w = world
    endpoint, server = w["endpoint"], w["server"]
    port = endpoint.local_address.port
    mark = server.daemon.mark()

    async def first_stream(name: str) -> tuple[str, int]:
        data, fin = BAD_INPUTS[name]
        from connet_core.protocol.messages import ALPN_RELAY

        conn = await endpoint.dial(w["relay_addr"], alpn=ALPN_RELAY, trust=Trust(pinned_der=w["relay_cert"]), timeout=10)
        await send_raw(await conn.open_stream(), data, fin)
        return name, await closed_code(conn)

    results: dict[str, int] = {}

    async def attacks() -> None:
        results.update(await asyncio.gather(*(first_stream(name) for name in BAD_INPUTS)))

    await payload_alongside(w["source_port"], attacks())
    assert results == {name: CloseCode.PROTOCOL_ERROR for name in BAD_INPUTS}
    logged = lines_matching(server.daemon, rf"WARNING connet\.relay: relay client 127\.0\.0\.1:{port}: ", mark)
    assert len(logged) == len(BAD_INPUTS), logged
    assert "Traceback" not in server.daemon.log()


async def relay_data_stream_resets(w) -> dict[str, int]:
    """After a valid proof and grant, each bad input on its own data stream: the reset codes."""
    conn = await relay_client(w["endpoint"], w["relay_addr"], w["relay_cert"], w["x"], (w["grant"],))
    results = {}
    for name, (data, fin) in BAD_INPUTS.items():
        if name == "wrong-field-type":
            data = _frame_raw({"t": "connect", "name": 7})
        stream = await conn.open_stream()
        await send_raw(stream, data, fin)
        with pytest.raises(StreamReset) as reset:
            await asyncio.wait_for(stream.read(), 10)
        results[name] = reset.value.code
    assert not conn.closed, "a bad data stream must not take the connection down"
    conn.close()
    return results


async def test_relay_data_stream_hostile_input_is_reset(world) -> None:
    results = await relay_data_stream_resets(world)
    assert results == {name: CloseCode.PROTOCOL_ERROR for name in BAD_INPUTS}


async def test_relay_data_stream_hostile_input_is_logged(world) -> None:
    mark = world["server"].daemon.mark()
    await relay_data_stream_resets(world)
    # the relay logs after resetting the stream: wait for the last line rather than race it
    world["server"].daemon.wait_for(
        r"connet\.relay: .*(expected|frame|malformed|stream ended)", start=mark, count=len(BAD_INPUTS)
    )


async def dial_direct(w):
    return await w["endpoint"].dial(w["dst_addr"], alpn=ALPN_PEER, trust=Trust(pinned_der=w["dst_cert"]), timeout=10)


async def test_direct_endpoint_hostile_input(world) -> None:
    w = world
    port = w["endpoint"].local_address.port
    dst = w["dst"]
    mark = dst.mark()

    async def first_stream(name: str) -> tuple[str, int]:
        data, fin = BAD_INPUTS[name]
        if name == "wrong-field-type":
            data = _frame_raw({"t": "hello", "certificate": "not-bytes"})
        conn = await dial_direct(w)
        await send_raw(await conn.open_stream(), data, fin)
        return name, await closed_code(conn)

    async def data_streams() -> dict[str, int]:
        """After a valid proof: each bad input on a data stream resets just that stream."""
        x: Identity = w["x"]
        conn = await dial_direct(w)
        proof = MessageStream(await conn.open_stream())
        await proof.send(Hello(certificate=x.der))
        challenge = await proof.recv(Challenge, timeout=10)
        await proof.send(Proof(sign_proof(x.key, challenge.nonce, certificate_hash(w["dst_cert"]), ALPN_PEER)))
        await proof.recv(Welcome, timeout=10)
        out = {}
        for name, (data, fin) in BAD_INPUTS.items():
            if name == "wrong-field-type":
                data = _frame_raw({"t": "connect", "name": 7})
            stream = await conn.open_stream()
            await send_raw(stream, data, fin)
            try:
                await asyncio.wait_for(stream.read(), 10)
                out["data:" + name] = -1
            except StreamReset as exc:
                out["data:" + name] = exc.code
        assert not conn.closed
        conn.close()
        return out

    results: dict[str, int] = {}

    async def attacks() -> None:
        outcomes = await asyncio.gather(*(first_stream(name) for name in BAD_INPUTS), data_streams())
        results.update(outcome for outcome in outcomes[:-1])
        results.update(outcomes[-1])

    await payload_alongside(w["source_port"], attacks())
    assert results == {
        **{name: CloseCode.PROTOCOL_ERROR for name in BAD_INPUTS},
        **{"data:" + name: CloseCode.PROTOCOL_ERROR for name in BAD_INPUTS},
    }
    logged = lines_matching(dst, rf"WARNING connet\.client: peer at 127\.0\.0\.1:{port}: ", mark)
    assert len(logged) == len(BAD_INPUTS), logged
    assert len(lines_matching(dst, r"DEBUG connet\.client: stream from peer [0-9a-f]+: ", mark)) == len(BAD_INPUTS)
    assert "Traceback" not in dst.log()

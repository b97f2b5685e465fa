"""Certificates: the control server's CA is checked by clients, and a peer that does not hold
the key of an announced certificate gets nothing from a relay (the direct-path variant is
tests/e2e/test_peer_identity.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from connet_core.errors import ConnectionLost
from connet_core.model import certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Connect, Connected, ConnectRefused, Welcome
from connet_core.protocol.streams import MessageStream
from connet_core.tls_stream import PinnedContexts, TLSStream
from secsupport import ControlSession, Identity, bind_endpoint, relay_client, relay_handshake
from support.cluster import TOKENS, start_control, start_destination, start_relay
from support.daemons import CONNET
from support.services import echo_server, sha256


async def test_client_refuses_a_control_server_signed_by_another_ca(daemons, server, tmp_path) -> None:
    other = tmp_path / "other-ca"
    subprocess.run([*CONNET, "cert", "--out", str(other), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    args = server.client_args(TOKENS[0])
    args[args.index("--server-cas") + 1] = str(other / "ca.pem")
    wrong = daemons.start("wrong-ca", [*args, "--dst-name", "web", "--dst-addr", "127.0.0.1:9"])
    line = wrong.wait_for(r"cannot reach control server 127\.0\.0\.1:\d+: .*").group(0)
    assert "certificate" in line.lower() or "verif" in line.lower(), line
    assert "Traceback" not in wrong.log()
    assert "connected to control server" not in wrong.log()
    assert "client 127.0.0.1" not in server.daemon.log(), "the server accepted a session it should never see"
    # control: the same client with the right CA connects
    right = start_destination(daemons, server, 9, name="right-ca")
    right.wait_for("connected to control server")


@pytest.fixture
async def relay_world(daemons, certs):
    """``connet control`` + ``connet relay`` + a real destination "web" (relay only, echo);
    an in-process attacker with a valid token that announced source "web" (identity X) and
    source "other" (identity Z), and learned the relay, its grants and the destination."""
    control = start_control(daemons, certs)
    relay, _ = start_relay(daemons, control)
    relay.wait_for("registered with control server")
    async with echo_server() as echo_port:
        dst = start_destination(daemons, control, echo_port, route="relay")
        endpoint = await bind_endpoint()
        session = await ControlSession.open(endpoint, control, TOKENS[1])
        try:
            x, z = Identity.new(), Identity.new()
            await session.announce("web", "source", x, route="relay")
            await session.announce("other", "source", z, route="relay")
            await session.wait(lambda: session.latest_peers("web"))
            await session.wait(lambda: session.grant_for("web", "source") and session.grant_for("other", "source"))
            relay_addr, relay_cert, grant_web = session.grant_for("web", "source")
            _, _, grant_other = session.grant_for("other", "source")
            dst_cert = session.latest_peers("web")[0].certificate
            dst.wait_for(r"relay 127\.0\.0\.1:\d+ connected")
            yield dict(endpoint=endpoint, relay=relay, relay_addr=relay_addr, relay_cert=relay_cert, x=x, z=z,
                       grant_web=grant_web, grant_other=grant_other, dst_cert=dst_cert, dst=dst)
        finally:
            await session.close()
            await endpoint.close()


async def test_relay_refuses_a_hello_with_the_victims_certificate_and_another_key(relay_world) -> None:
    w = relay_world
    impostor = Identity.new()  # signs with its own key while naming the destination's certificate
    conn, messages = await relay_handshake(w["endpoint"], w["relay_addr"], w["relay_cert"], w["dst_cert"],
                                           impostor.key, (w["grant_web"],))
    with pytest.raises(ConnectionLost) as lost:
        await messages.recv(Welcome, timeout=10)
    assert lost.value.code == CloseCode.PROOF_FAILED
    w["relay"].wait_for("failed the identity proof")


async def test_relay_refuses_a_grant_issued_for_another_certificate(relay_world) -> None:
    w = relay_world
    y = Identity.new()  # proves its own key, but shows X's grant
    conn, messages = await relay_handshake(w["endpoint"], w["relay_addr"], w["relay_cert"], y.der, y.key, (w["grant_web"],))
    with pytest.raises(ConnectionLost) as lost:
        await messages.recv(Welcome, timeout=10)
    assert lost.value.code == CloseCode.GRANT_INVALID
    w["relay"].wait_for("presented no valid grant")


async def test_relay_refuses_a_client_without_grant(relay_world) -> None:
    w = relay_world
    x = w["x"]
    conn, messages = await relay_handshake(w["endpoint"], w["relay_addr"], w["relay_cert"], x.der, x.key, ())
    with pytest.raises(ConnectionLost) as lost:
        await messages.recv(Welcome, timeout=10)
    assert lost.value.code == CloseCode.GRANT_INVALID


async def test_relay_refuses_a_forged_grant(relay_world) -> None:
    w = relay_world
    x = w["x"]
    forged = bytearray(w["grant_web"])
    forged[-1] ^= 1
    conn, messages = await relay_handshake(w["endpoint"], w["relay_addr"], w["relay_cert"], x.der, x.key, (bytes(forged),))
    with pytest.raises(ConnectionLost) as lost:
        await messages.recv(Welcome, timeout=10)
    assert lost.value.code == CloseCode.GRANT_INVALID


async def test_relay_refuses_connect_for_a_name_the_grant_does_not_cover(relay_world) -> None:
    """Z holds a valid grant for source "other" only: Connect("web") is ConnectRefused(GRANT_INVALID)."""
    w = relay_world
    conn = await relay_client(w["endpoint"], w["relay_addr"], w["relay_cert"], w["z"], (w["grant_other"],))
    messages = MessageStream(await conn.open_stream())
    await messages.send(Connect("web", peer=certificate_hash(w["dst_cert"])))
    reply = await messages.recv((Connected, ConnectRefused), timeout=10)
    assert isinstance(reply, ConnectRefused) and reply.code == CloseCode.GRANT_INVALID
    conn.close()


async def test_relay_serves_the_right_key_and_grant_end_to_end(relay_world) -> None:
    """The positive control of the refusals above: X with its own key and grant reaches the
    destination through the relay, runs TLS end to end and gets its payload echoed intact."""
    w = relay_world
    x: Identity = w["x"]
    conn = await relay_client(w["endpoint"], w["relay_addr"], w["relay_cert"], x, (w["grant_web"],))
    raw = await conn.open_stream()
    hop = MessageStream(raw)
    await hop.send(Connect("web", peer=certificate_hash(w["dst_cert"])))
    assert isinstance(await hop.recv((Connected, ConnectRefused), timeout=10), Connected)
    tls = TLSStream(raw, server_side=False, contexts=PinnedContexts(x.tls), peer_der=w["dst_cert"],
                    initial=hop.take_remaining())
    await asyncio.wait_for(tls.handshake(), 10)
    inner = MessageStream(tls)  # the destination answers inside the TLS (client._open_path)
    await inner.recv(Connected, timeout=10)
    payload = os.urandom(300_000)
    received = bytearray(inner.take_remaining())

    async def send() -> None:
        for offset in range(0, len(payload), 16384):
            await tls.write(payload[offset:offset + 16384])
        await tls.write_eof()

    async def receive() -> None:
        while chunk := await tls.read(65536):
            received.extend(chunk)

    await asyncio.wait_for(asyncio.gather(send(), receive()), 30)
    assert sha256(bytes(received)) == sha256(payload)
    conn.close()

"""A client with a valid token but without the key of an announced certificate cannot get a
tunneled stream from a destination: the listener serves nothing before the proof checks out."""

from __future__ import annotations

import asyncio
import os

import pytest

from connet_core.certs import make_identity, sign_proof
from connet_core.errors import ConnectionLost
from connet_core.model import HostPort, certificate_hash
from connet_core.plugins import load_hooks
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import (
    ALPN_CONTROL,
    ALPN_PEER,
    Announce,
    Authenticate,
    Authenticated,
    Challenge,
    Connect,
    Connected,
    Hello,
    PeersUpdate,
    Proof,
    RelaysUpdate,
    Welcome,
)
from connet_core.protocol.streams import MessageStream
from connet_core.transport import Trust
from support.cluster import TOKENS, start_destination
from support.services import echo_server


async def learn_destination(control: HostPort, cafile, certificate: bytes, endpoint) -> tuple[bytes, list[str]]:
    """Act as a legitimate source of 'web' at control: learn the destination's certificate."""
    conn = await endpoint.dial(control, alpn=ALPN_CONTROL, trust=Trust(server_name="127.0.0.1", cafile=cafile))
    messages = MessageStream(await conn.open_stream())
    await messages.send(Authenticate(token=TOKENS[2]))
    await messages.recv(Authenticated, timeout=5)
    await messages.send(Announce("web", "source", "any", certificate, ()))
    while True:
        update = await messages.recv((PeersUpdate, RelaysUpdate), timeout=10)
        if isinstance(update, PeersUpdate) and update.peers:
            return update.peers[0].certificate, list(update.peers[0].addresses)


@pytest.fixture
async def attacker(server, daemons):
    async with echo_server() as echo_port:
        dst = start_destination(daemons, server, echo_port)
        dst.wait_for("connected to control server")
        transport = load_hooks().transport("auto")
        endpoint = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[])
        announced, announced_der, announced_key = make_identity("connet-client")
        dst_cert, dst_addresses = await learn_destination(
            HostPort("127.0.0.1", server.control_port), server.certs / "ca.pem", announced_der, endpoint
        )
        try:
            yield endpoint, announced_der, announced_key, dst_cert, HostPort.parse(dst_addresses[0]), dst
        finally:
            await endpoint.close()


async def attempt(endpoint, dst_cert: bytes, dst_addr: HostPort, hello_cert: bytes, signing_key):
    """Dial the destination, open a data stream before proving, then run the proof."""
    conn = await endpoint.dial(dst_addr, alpn=ALPN_PEER, trust=Trust(pinned_der=dst_cert), timeout=5)
    proof_stream = MessageStream(await conn.open_stream())
    await proof_stream.send(Hello(certificate=hello_cert))
    # a data request sent before the proof: it must never be answered
    early = MessageStream(await conn.open_stream())
    await early.send(Connect("web"))
    challenge = await proof_stream.recv(Challenge, timeout=10)
    await proof_stream.send(Proof(sign_proof(signing_key, challenge.nonce, certificate_hash(dst_cert), ALPN_PEER)))
    return conn, proof_stream, early


async def test_unannounced_certificate_is_refused(attacker) -> None:
    endpoint, _, _, dst_cert, dst_addr, dst = attacker
    _, other_der, other_key = make_identity("connet-client")
    conn = await endpoint.dial(dst_addr, alpn=ALPN_PEER, trust=Trust(pinned_der=dst_cert), timeout=5)
    messages = MessageStream(await conn.open_stream())
    await messages.send(Hello(certificate=other_der))
    early = MessageStream(await conn.open_stream())
    await early.send(Connect("web"))
    with pytest.raises(ConnectionLost) as lost:
        await messages.recv(Challenge, timeout=10)
    assert lost.value.code == CloseCode.UNKNOWN_PEER
    with pytest.raises(ConnectionLost):
        await early.recv(Connected, timeout=5)
    dst.wait_for("certificate no matched peer announced")


async def test_announced_certificate_without_its_key_is_refused(attacker) -> None:
    endpoint, announced_der, _, dst_cert, dst_addr, dst = attacker
    _, _, wrong_key = make_identity("connet-client")
    conn, proof_stream, early = await attempt(endpoint, dst_cert, dst_addr, announced_der, wrong_key)
    with pytest.raises(ConnectionLost) as lost:
        await proof_stream.recv(Welcome, timeout=10)
    assert lost.value.code == CloseCode.PROOF_FAILED
    with pytest.raises(ConnectionLost):
        await early.recv(Connected, timeout=5)
    dst.wait_for("failed the identity proof")


async def test_the_real_key_is_served(attacker) -> None:
    """The same steps with the announced key succeed: the refusals above are the proof's doing."""
    endpoint, announced_der, announced_key, dst_cert, dst_addr, _ = attacker
    conn, proof_stream, early = await attempt(endpoint, dst_cert, dst_addr, announced_der, announced_key)
    await proof_stream.recv(Welcome, timeout=10)
    await early.recv(Connected, timeout=10)
    payload = os.urandom(1000)
    await early.stream.write(payload)
    await early.stream.write_eof()
    received = early.take_remaining()
    while len(received) < len(payload):
        chunk = await asyncio.wait_for(early.stream.read(), 10)
        if not chunk:
            break
        received += chunk
    assert received == payload
    conn.close()

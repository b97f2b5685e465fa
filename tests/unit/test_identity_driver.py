"""The asyncio drivers of the identity proof (connet_core/protocol/identity_io.py) over the
in-memory transport: a real dial, the proof on the first stream, the verdict as values."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from connet_core.certs import make_identity
from connet_core.errors import ConnectionLost
from connet_core.model import HostPort, certificate_hash
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import frame
from connet_core.protocol.identity import Accepted, Authorize, AuthorizeAt, Refused
from connet_core.protocol.identity_io import prove, verify
from connet_core.protocol.messages import ALPN_PEER, ALPN_RELAY, Challenge, Hello, Proof
from connet_core.protocol.streams import MessageStream
from connet_core.testing import MemoryNetwork
from connet_core.transport import Trust

LISTENER = make_identity("listener")
DIALER = make_identity("dialer")
OTHER = make_identity("other")
STEP = 0.5  # generous for an in-memory exchange, short for the timeout tests


@contextlib.asynccontextmanager
async def connection(alpn: str = ALPN_PEER):
    """A dialed and an accepted in-memory connection, closed afterwards."""
    network = MemoryNetwork()
    transport = network.transport()
    server = await transport.bind(HostPort("", 0), identity=LISTENER[0], alpns=[alpn])
    client = await transport.bind(HostPort("", 0), identity=None, alpns=[])
    try:
        dialed = await client.dial(server.local_address, alpn=alpn, trust=Trust(server_name="listener", pinned_der=LISTENER[1]))
        accepted = await server.accept()
        yield dialed, accepted
    finally:
        await client.close()
        await server.close()


async def run_both(dialed, accepted, *, alpn=ALPN_PEER, key=DIALER[2], grants=(), authorize=None,
                   authorize_at=AuthorizeAt.HELLO):
    """The client's dial and the listener's accept, as the glue would run them."""
    asked: list[Authorize] = []

    async def default_authorize(request: Authorize) -> object:
        asked.append(request)
        return "the peer"

    async def listener_side():
        stream = await asyncio.wait_for(accepted.accept_stream(), STEP)
        outcome = await verify(MessageStream(stream), listener_hash=certificate_hash(LISTENER[1]), alpn=alpn,
                               authorize=authorize or default_authorize, authorize_at=authorize_at, step_timeout=STEP)
        if isinstance(outcome, Refused):
            accepted.close(outcome.code, outcome.reason)
        return outcome

    async def dialer_side():
        outcome = await prove(MessageStream(await dialed.open_stream()), certificate=DIALER[1], key=key,
                              listener_hash=certificate_hash(dialed.peer_certificate or b""), alpn=alpn, grants=grants,
                              step_timeout=STEP)
        return outcome

    async with asyncio.TaskGroup() as tg:
        listened = tg.create_task(listener_side())
        dialt = tg.create_task(dialer_side())
    return dialt.result(), listened.result(), asked


async def test_the_right_key_is_accepted_on_both_ends():
    async with connection(ALPN_RELAY) as (dialed, accepted):
        proved, verified, asked = await run_both(dialed, accepted, alpn=ALPN_RELAY, grants=(b"g1", b"g2"),
                                                 authorize_at=AuthorizeAt.PROOF)
    assert proved == Accepted(b"", certificate_hash(LISTENER[1]))
    assert verified == Accepted(DIALER[1], certificate_hash(DIALER[1]), (b"g1", b"g2"), "the peer")
    assert [(a.certificate, a.grants) for a in asked] == [(DIALER[1], (b"g1", b"g2"))]


async def test_a_wrong_key_is_refused_and_the_dialer_learns_the_code():
    async with connection() as (dialed, accepted):
        proved, verified, _ = await run_both(dialed, accepted, key=OTHER[2])
    assert verified == Refused(CloseCode.PROOF_FAILED, "the proof does not match the certificate",
                               hash=certificate_hash(DIALER[1]))
    assert isinstance(proved, Refused) and proved.code == CloseCode.PROOF_FAILED and proved.by_peer


async def test_the_glue_refusal_closes_with_its_code():
    async def unknown(request: Authorize) -> object:
        return Refused(CloseCode.UNKNOWN_PEER, "unknown peer")

    async with connection() as (dialed, accepted):
        proved, verified, _ = await run_both(dialed, accepted, authorize=unknown)
    assert verified == Refused(CloseCode.UNKNOWN_PEER, "unknown peer", hash=certificate_hash(DIALER[1]))
    assert isinstance(proved, Refused) and proved.code == CloseCode.UNKNOWN_PEER and proved.by_peer


async def test_a_slow_authorization_times_out():
    async def slow(request: Authorize) -> object:
        await asyncio.Event().wait()  # never answers: the step deadline must end it

    # the outer bound only turns a missing step deadline into a failure instead of a hang
    async with asyncio.timeout(STEP * 20), connection() as (dialed, accepted):
        proved, verified, _ = await run_both(dialed, accepted, authorize=slow)
    assert verified == Refused(CloseCode.TIMEOUT, "timed out waiting for the authorization", hash=certificate_hash(DIALER[1]))
    assert isinstance(proved, Refused) and proved.code == CloseCode.TIMEOUT


async def test_a_silent_dialer_times_out_and_a_malformed_one_is_a_protocol_error():
    async with connection() as (dialed, accepted):
        stream = await dialed.open_stream()
        await stream.write(frame(Hello(DIALER[1])))  # then never sends the Proof
        outcome = await verify(MessageStream(await accepted.accept_stream()), listener_hash=certificate_hash(LISTENER[1]),
                               alpn=ALPN_PEER, authorize=_yes, step_timeout=STEP)
        assert outcome == Refused(CloseCode.TIMEOUT, "timed out waiting for Proof", hash=certificate_hash(DIALER[1]))
        challenge = await MessageStream(stream).recv(Challenge, timeout=STEP)
        assert len(challenge.nonce) == 32

    async with connection() as (dialed, accepted):
        stream = await dialed.open_stream()
        await stream.write(b"\x00\x00\x00\x02\xc1\xc1")  # a frame whose payload is not msgpack
        outcome = await verify(MessageStream(await accepted.accept_stream()), listener_hash=certificate_hash(LISTENER[1]),
                               alpn=ALPN_PEER, authorize=_yes, step_timeout=STEP)
        assert isinstance(outcome, Refused) and outcome.code == CloseCode.PROTOCOL_ERROR and not outcome.by_peer


async def test_a_listener_that_closes_mid_proof_refuses_the_dialer_with_its_code():
    async with connection() as (dialed, accepted):
        async def listener_gives_up():
            messages = MessageStream(await accepted.accept_stream())
            await messages.recv(Hello, timeout=STEP)
            accepted.close(CloseCode.SHUTDOWN, "stopping")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(listener_gives_up())
            proving = tg.create_task(prove(MessageStream(await dialed.open_stream()), certificate=DIALER[1],
                                           key=DIALER[2], listener_hash=certificate_hash(LISTENER[1]), alpn=ALPN_PEER,
                                           step_timeout=STEP))
    assert proving.result() == Refused(CloseCode.SHUTDOWN, str(ConnectionLost(CloseCode.SHUTDOWN, "stopping")), True,
                                       certificate_hash(LISTENER[1]))


async def test_cancellation_wins():
    async with connection() as (dialed, accepted):
        task = asyncio.create_task(prove(MessageStream(await dialed.open_stream()), certificate=DIALER[1], key=DIALER[2],
                                         listener_hash=certificate_hash(LISTENER[1]), alpn=ALPN_PEER, step_timeout=60))
        # once its Hello is here, the driver is waiting for the Challenge: cancel it there
        await MessageStream(await accepted.accept_stream()).recv(Hello, timeout=STEP)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _yes(request: Authorize) -> object:
    return None

"""Asyncio drivers of the identity proof machines (:mod:`connet_core.protocol.identity`)
over a :class:`~connet_core.protocol.streams.MessageStream`.

Each returns the verdict, :class:`Accepted` or :class:`Refused`, instead of raising: the
caller closes the connection with ``Refused.code`` and logs ``Refused.reason``. Everything
the peer or the transport can do to the proof stream (a malformed frame, the stream ended,
the connection closed, the stream reset, silence past a step's deadline) ends up as a
Refused. Cancellation is never caught: the caller's timeouts and task groups win.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from connet_core.errors import ConnectionLost, ProtocolError, StreamReset
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.identity import (
    STEP_TIMEOUT,
    Accepted,
    Authorize,
    AuthorizeAt,
    Dialer,
    Listener,
    Refused,
    Step,
    Wait,
)
from connet_core.protocol.streams import MessageStream

if TYPE_CHECKING:
    from connet_core.certs import PrivateKey

__all__ = ["Authorizer", "NONCE_SIZE", "prove", "verify"]

NONCE_SIZE = 32

# The glue's decision: anything but a Refused is a yes, and comes back as Accepted.context.
Authorizer = Callable[[Authorize], Awaitable[object]]


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _run(
    machine: Dialer | Listener, step: Step, messages: MessageStream, authorize: Authorizer | None
) -> Accepted | Refused:
    while True:
        try:
            for message in step.send:
                await messages.send(message)
            then = step.then
            if isinstance(then, (Accepted, Refused)):
                return then
            if isinstance(then, Wait):
                step = await _receive(machine, then, messages)
            else:
                step = await _authorize(machine, then, authorize)
        except (ProtocolError, ConnectionLost, StreamReset) as exc:
            # ProtocolError here: a message of ours could not be encoded (internal-error).
            code = exc.code
            by_peer = isinstance(exc, StreamReset) or (isinstance(exc, ConnectionLost) and exc.by_peer)
            if machine.outcome is not None:
                # The listener's Welcome is the step that accepts: if it cannot be sent, the
                # dialer never learns it was accepted, so the verdict is this failure.
                return Refused(code, str(exc), by_peer, machine.outcome.hash)
            step = machine.abort(code, str(exc), by_peer)


async def _authorize(machine: Dialer | Listener, request: Authorize, authorize: Authorizer | None) -> Step:
    assert authorize is not None and isinstance(machine, Listener)
    try:
        async with asyncio.timeout_at(request.deadline):
            answer = await authorize(request)
    except TimeoutError:
        return machine.expire(max(_now(), request.deadline))
    if isinstance(answer, Refused):
        return machine.refuse(answer.code, answer.reason)
    return machine.authorized(_now(), answer)


async def _receive(machine: Dialer | Listener, wait: Wait, messages: MessageStream) -> Step:
    try:
        # recv checks nothing but framing here: the machine judges the message's type. But
        # the decoding limits are those of what the machine waits for: this runs before the
        # peer proved anything, so a padded frame must be refused cheaply.
        message = await messages.recv(None, timeout=max(0.0, wait.deadline - _now()), limits=wait.expected)
    except ProtocolError as exc:
        if exc.code == CloseCode.TIMEOUT:
            # asyncio may fire a timer up to its clock resolution early: the deadline has passed.
            return machine.expire(max(_now(), wait.deadline))
        return machine.abort(exc.code, str(exc))
    return machine.receive(message, _now())


async def prove(
    messages: MessageStream,
    *,
    certificate: bytes,
    key: PrivateKey,
    listener_hash: bytes,
    alpn: str,
    grants: tuple[bytes, ...] = (),
    step_timeout: float = STEP_TIMEOUT,
) -> Accepted | Refused:
    """The dialer's half on the connection's first stream (``messages``): Accepted once the
    listener sent Welcome; Refused (with the listener's close code when it closed on us)."""
    machine = Dialer(certificate, key, listener_hash, alpn, grants, step_timeout)
    return await _run(machine, machine.start(_now()), messages, None)


async def verify(
    messages: MessageStream,
    *,
    listener_hash: bytes,
    alpn: str,
    authorize: Authorizer,
    authorize_at: AuthorizeAt = AuthorizeAt.HELLO,
    step_timeout: float = STEP_TIMEOUT,
    nonce: bytes | None = None,
) -> Accepted | Refused:
    """The listener's half on the accepted first stream: Accepted (with ``authorize``'s
    answer as ``context``) once Welcome is sent, else Refused. ``authorize`` is awaited
    at most until its step's deadline; it returns a Refused to refuse. ``nonce`` defaults
    to NONCE_SIZE fresh random bytes (only tests pass one)."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    machine = Listener(listener_hash, alpn, nonce, authorize_at, step_timeout)
    return await _run(machine, machine.start(_now()), messages, authorize)

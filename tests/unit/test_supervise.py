"""The supervision rule of the long-lived loops (connet_core/supervise.py): which failures
retry, which end the component, and that cancellation always wins, also in disguise."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from connet_core.errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    DialError,
    PluginError,
    ProtocolError,
    StoreError,
    StreamReset,
)
from connet_core.protocol.codes import CloseCode
from connet_core.supervise import TaskGroup, attempt, close_code, contained, describe, pause, retryable
from connet_core.model import HostPort
from connet_core.testing import MemoryNetwork, make_test_certificate
from connet_core.transport import Trust

RETRIED = [
    ConnectionLost(CloseCode.SHUTDOWN),
    StreamReset(CloseCode.TIMEOUT),
    DialError("dial 127.0.0.1:1: unreachable"),
    ProtocolError("timed out after 5.0s waiting for Welcome", CloseCode.TIMEOUT),
    AuthError("refused", CloseCode.AUTH_FAILED),
    TimeoutError(),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError(24, "Too many open files"),
]
FATAL = [
    ConfigError("bad key"),
    PluginError("no such plugin"),
    StoreError("corrupt"),
    AttributeError("'NoneType' object has no attribute 'x'"),
    AssertionError(),
    ValueError("a bug"),
    KeyError("k"),
]


@pytest.mark.parametrize("exc", RETRIED, ids=lambda e: type(e).__name__)
def test_what_the_network_or_a_peer_causes_is_retried(exc: BaseException) -> None:
    assert retryable(exc) is exc
    with attempt() as tried:
        raise exc
    assert tried.error is exc


@pytest.mark.parametrize("exc", FATAL, ids=lambda e: type(e).__name__)
def test_config_and_programming_errors_end_the_component(exc: BaseException) -> None:
    assert retryable(exc) is None
    with pytest.raises(type(exc)):
        with attempt():
            raise exc


def test_an_exception_group_retries_only_if_every_leaf_does() -> None:
    lost = ConnectionLost(CloseCode.SHUTDOWN)
    late = ProtocolError("late", CloseCode.TIMEOUT)
    group = ExceptionGroup("g", [lost, ExceptionGroup("inner", [late])])
    assert retryable(group) is lost
    with attempt() as tried:
        raise group
    assert tried.error is lost
    mixed = ExceptionGroup("g", [lost, ValueError("bug")])
    assert retryable(mixed) is None
    with pytest.raises(ExceptionGroup):
        with attempt():
            raise mixed


def test_an_attempt_that_returned_has_no_error() -> None:
    with attempt() as tried:
        pass
    assert tried.error is None


def test_close_code_and_describe() -> None:
    assert close_code(ProtocolError("late", CloseCode.TIMEOUT)) == CloseCode.TIMEOUT
    assert close_code(ExceptionGroup("g", [ProtocolError("bad")])) == CloseCode.PROTOCOL_ERROR
    assert close_code(asyncio.CancelledError()) == CloseCode.SHUTDOWN
    assert close_code(ConnectionLost(CloseCode.OK)) == CloseCode.INTERNAL_ERROR
    assert describe(ProtocolError("timed out\n after 5.0s")) == "timed out after 5.0s"
    assert describe(TimeoutError()) == "TimeoutError"


async def _child_fails_when_cancelled(gate: asyncio.Event) -> None:
    """A relay link's child: when the stop cancels it, its connection is closed under it
    too (the server stopped at the same moment), and what it raises is ConnectionLost."""
    try:
        gate.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise ConnectionLost(CloseCode.SHUTDOWN, "server stopping") from None


async def _session_with_a_child(gate: asyncio.Event) -> None:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_child_fails_when_cancelled(gate))
        await asyncio.Event().wait()


async def test_python_turns_the_cancellation_into_the_childrens_error() -> None:
    """Why the rule is needed: on 3.11 this loop, written the obvious way, swallows its own
    cancellation and goes round again (the client that ignored SIGTERM)."""
    gate = asyncio.Event()
    second_round = asyncio.Event()
    stop = False

    async def naive_loop() -> None:
        rounds = 0
        while not stop:
            rounds += 1
            if rounds == 2:
                second_round.set()
            try:
                await _session_with_a_child(gate)
            except* ConnectionLost:
                pass

    task = asyncio.create_task(naive_loop())
    await gate.wait()
    gate.clear()
    task.cancel()
    await asyncio.wait_for(second_round.wait(), 5)  # cancelled, and yet it runs another round
    await gate.wait()
    assert not task.done()
    stop = True  # the only way out: a cancel would be swallowed again
    task.cancel()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)


async def _body_finishes_then_a_child_fails(group: type[asyncio.TaskGroup], error: BaseException) -> None:
    """A dialer's shape: the body only starts children; one fails after the body is done."""
    started = asyncio.Event()

    async def child() -> None:
        started.set()
        await asyncio.sleep(0)  # let the body finish first: the group is already waiting
        raise error

    async with group() as tg:
        tg.create_task(child())
    raise AssertionError("unreachable: the child's error leaves the group")


@pytest.mark.parametrize("error", [OSError("unreachable"), ConnectionLost(CloseCode.TIMEOUT, "idle")])
async def test_a_child_failing_after_the_body_leaves_no_stale_cancellation(error: BaseException) -> None:
    """Python 3.11's TaskGroup cancels its parent for a child that fails after the body
    finished and never takes it back; the rule's TaskGroup does, so the loop retries."""
    rounds = 0

    async def loop(group: type[asyncio.TaskGroup]) -> int:
        nonlocal rounds
        rounds = 0
        while rounds < 3:
            rounds += 1
            with attempt() as tried:
                await _body_finishes_then_a_child_fails(group, error)
            assert tried.error is not None
            await pause(0)
        return rounds

    assert await asyncio.create_task(loop(TaskGroup)) == 3
    if sys.version_info < (3, 12):  # what the fix is for: the plain group ends the loop as if stopped
        task = asyncio.create_task(loop(asyncio.TaskGroup))
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() and rounds == 1


async def test_cancellation_wins_over_the_childrens_errors() -> None:
    """The same loop under the rule ends at the first cancel."""
    rounds = 0
    gate = asyncio.Event()

    async def supervised_loop() -> None:
        nonlocal rounds
        while rounds < 3:  # (a way out, so that a broken rule fails this test instead of hanging it)
            rounds += 1
            with attempt():
                await _session_with_a_child(gate)
            await pause(0)

    task = asyncio.create_task(supervised_loop())
    await gate.wait()
    gate.clear()
    task.cancel()
    while not task.done():
        task.cancel()  # each further round swallows a cancel of its own if the rule is broken
        await asyncio.wait({task, asyncio.ensure_future(gate.wait())}, return_when=asyncio.FIRST_COMPLETED)
        gate.clear()
    assert task.cancelled()
    assert rounds == 1


async def test_a_retried_failure_then_cancellation_during_the_pause() -> None:
    failures: list[BaseException] = []
    failed = asyncio.Event()

    async def loop() -> None:
        while True:
            with attempt() as tried:
                raise ProtocolError("timed out after 5.0s waiting for Welcome", CloseCode.TIMEOUT)
            failures.append(tried.error)
            failed.set()
            await pause(60)

    task = asyncio.create_task(loop())
    await failed.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert len(failures) == 1


async def test_cancellation_that_wait_for_swallowed_is_raised_again() -> None:
    """3.11's wait_for returns a result that arrived together with the cancellation;
    the attempt raises the cancellation anyway when it ends."""
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    returned: list[int] = []

    async def body() -> None:
        with attempt():
            returned.append(await asyncio.wait_for(fut, 10))

    task = asyncio.create_task(body())
    await asyncio.sleep(0)  # the task is now waiting inside wait_for
    fut.set_result(7)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    if sys.version_info < (3, 12):
        assert returned == [7]  # wait_for did swallow it: the attempt is what raised


async def test_a_cancelled_group_leaf_is_cancellation() -> None:
    with pytest.raises(asyncio.CancelledError):
        with attempt():
            raise BaseExceptionGroup("g", [ConnectionLost(CloseCode.OK), asyncio.CancelledError()])


async def test_contained_ends_one_task_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("connet.test")

    async def fails() -> None:
        raise StreamReset(CloseCode.TIMEOUT)

    with caplog.at_level(logging.WARNING, "connet.test"):
        assert await contained(fails(), "stream from peer abc", log) is None
    assert [r.getMessage() for r in caplog.records] == ["stream from peer abc: stream reset (code 11)"]

    async def works() -> int:
        return 3

    assert await contained(works(), "x", log) == 3

    async def bug() -> None:
        raise AttributeError("bug")

    with pytest.raises(AttributeError):
        await contained(bug(), "x", log)


async def test_a_session_over_the_memory_transport_is_retried_after_its_connection_closes() -> None:
    """The rule around a real session shape: dial, serve the connection's streams until it
    closes, retry; the peer closing is one retried failure, and a stop ends the loop."""
    identity, der, _, _ = make_test_certificate("server.test")
    transport = MemoryNetwork().transport()
    server = await transport.bind(HostPort("127.0.0.1", 0), identity=identity, alpns=["t"])
    client = await transport.bind(HostPort("127.0.0.1", 0), identity=None, alpns=[])
    errors: list[BaseException] = []
    connected = asyncio.Queue()

    async def session() -> None:
        conn = await client.dial(server.local_address, alpn="t", trust=Trust(server_name="server.test", pinned_der=der))
        await connected.put(conn)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(conn.wait_closed())
            await conn.accept_stream()  # raises ConnectionLost when the server closes it

    async def loop() -> None:
        while True:
            with attempt() as tried:
                await session()
            errors.append(tried.error)
            await pause(0)

    task = asyncio.create_task(loop())
    await asyncio.wait_for(connected.get(), 5)
    accepted = await asyncio.wait_for(server.accept(), 5)
    accepted.close(CloseCode.SHUTDOWN, "bye")
    await asyncio.wait_for(connected.get(), 5)  # dialed again after the failure
    await asyncio.wait_for(server.accept(), 5)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionLost)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    await client.close()
    await server.close()

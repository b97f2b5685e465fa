"""Hostile files and inputs against real processes: files that are not small regular files
(FIFOs, /dev/zero), configurations nested too deep or holding a token too long for the
protocol, first messages padded to cost decoding time before authentication, and slowloris
clients of the status endpoint. None may stall, exhaust or crash a daemon."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from connet_core.errors import ConnectionLost
from connet_core.model import HostPort
from connet_core.protocol.codec import MAX_FRAME_SIZE
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import ALPN_CONTROL, ALPN_RELAY
from connet_core.transport import Trust
from secsupport import (
    TOKEN_A,
    TOKEN_B,
    TOKEN_C,
    ControlSession,
    Identity,
    bind_endpoint,
    control_trust,
    lines_matching,
    start_custom_server,
    toml_list,
)
from support.cluster import TOKENS
from support.daemons import CONNET

LOOPBACK_OTHER = "127.0.0.2"  # the well-behaved status reader: another loopback address

# Runs a command and prints its exit code and peak RSS (KiB) as JSON on stdout, the command's
# stderr passed through. Its only child is the command, so RUSAGE_CHILDREN is the command's.
# The command's address space is capped at 1 GiB so a regression reading /dev/zero fails
# with MemoryError instead of eating the shared machine.
_MEASURE = r"""
import json, resource, subprocess, sys
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
try:
    rc = subprocess.run(sys.argv[1:], preexec_fn=cap, timeout=float(__import__("os").environ["T"])).returncode
except subprocess.TimeoutExpired:
    rc = "timeout"
print(json.dumps({"rc": rc, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_measured(args: list[str], cwd: Path, timeout: float = 30.0) -> tuple[object, int, list[str]]:
    """(exit code or "timeout", peak RSS in KiB, stderr lines) of ``connet ARGS``."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNET_")}
    result = subprocess.run([sys.executable, "-c", _MEASURE, *CONNET, *args], cwd=cwd, capture_output=True,
                            text=True, env={**clean, "T": str(timeout)}, timeout=timeout + 30)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["rc"], measured["max_rss_kib"], result.stderr.splitlines()


def assert_one_line_exit_2(args: list[str], cwd: Path, *fragments: str) -> int:
    """``connet ARGS`` exits 2 with one error line holding ``fragments``; its peak RSS (KiB)."""
    rc, rss, lines = run_measured(args, cwd)
    assert rc == 2, (rc, lines[-5:])
    assert len(lines) == 1 and lines[0].startswith("connet: error: "), lines[-5:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return rss


# --- status GETs ------------------------------------------------------------------------------


async def status_get(port: int, source: str = LOOPBACK_OTHER, timeout: float = 10.0) -> dict:
    """GET / from ``source``; the status JSON (AssertionError unless 200)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: status\r\n\r\n")
            answer = await reader.read()
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:80]
    return json.loads(body)


def server_with_status(daemons, certs, body: str):
    server = start_custom_server(daemons, certs, body + 'status-addr = "127.0.0.1:0"\n')
    _, status_port = server.daemon.listening("status", "tcp")
    return server, status_port


# --- a FIFO swapped in for the tokens file while the server runs --------------------------------


async def test_fifo_swapped_in_as_tokens_file_keeps_the_server_serving(daemons, certs, tmp_path) -> None:
    """The server once blocked in open() on the FIFO: status, relay and new sessions dead. Now
    the replacement is refused with one error line, the old tokens stay valid, status answers,
    and a good file put back later is picked up."""
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    server, status_port = server_with_status(daemons, certs, f'tokens-file = "{tokens_file}"\n')
    endpoint = await bind_endpoint()
    sessions: list[ControlSession] = []
    try:
        holder = await ControlSession.open(endpoint, server, TOKEN_A)  # the recheck loop re-reads for it
        sessions.append(holder)
        mark = server.daemon.mark()
        fifo = tmp_path / "tokens.fifo"
        os.mkfifo(fifo)
        os.replace(fifo, tokens_file)
        server.daemon.wait_for(r"tokens file .*tokens\.txt: is a FIFO \(named pipe\), not a regular file: "
                               r"keeping the last good set", timeout=10, start=mark)
        for _ in range(5):
            assert (await status_get(status_port))["role"] == "server"
        for _ in range(3):  # new sessions with the old set, each one another look at the file
            session = await ControlSession.open(endpoint, server, TOKEN_B)
            sessions.append(session)
            await session.announce("web", "source", Identity.new())
            await session.wait(lambda s=session: any(u.name == "web" for u in s.relays))
        with pytest.raises(ConnectionLost) as lost:  # the FIFO's "tokens" were never read
            await ControlSession.open(endpoint, server, TOKEN_C)
        assert lost.value.code == CloseCode.AUTH_FAILED
        assert not holder.task.done(), "the holder's session was closed"
        errors = lines_matching(server.daemon, r"ERROR connet\.tokens: ", mark)
        assert len(errors) == 1, errors

        good = tmp_path / "tokens.good"
        good.write_text(f"{TOKEN_A}\n{TOKEN_C}\n")
        os.replace(good, tokens_file)
        server.daemon.wait_for(r"tokens file .* reloaded: 2 tokens", timeout=10, start=mark)
        sessions.append(await ControlSession.open(endpoint, server, TOKEN_C))
    finally:
        for session in sessions:
            await session.close()
        await endpoint.close()
    assert "Traceback" not in server.daemon.log()


# --- /dev/zero, a FIFO, deep nesting and long tokens at configuration time ------------------------


def _file_key_cases(certs: Path) -> dict[str, tuple[str, str, str]]:
    """case -> (command, config text with BAD for the hostile path, the key the error names)."""
    ca, cert, key = certs / "ca.pem", certs / "server.pem", certs / "server-key.pem"
    server = f'[server]\ncert-file = "{cert}"\nkey-file = "{key}"\ntokens = ["t"]\n'
    return {
        "client.token-file": ("client", '[client]\ntoken-file = "BAD"\n', "client.token-file"),
        "client.server-cas": ("client", f'[client]\ntoken = "t"\nserver-cas = "BAD"\n', "client.server-cas"),
        "server.cert-file": ("server", server.replace(str(cert), "BAD"), "server.cert-file"),
        "server.key-file": ("server", server.replace(str(key), "BAD"), "server.key-file"),
        "server.tokens-file": ("server", server.replace('tokens = ["t"]', 'tokens-file = "BAD"'), "server.tokens-file"),
        "relay.token-file": ("relay", f'[relay]\ntoken-file = "BAD"\ncontrol-cas = "{ca}"\n', "relay.token-file"),
        "relay.control-cas": ("relay", '[relay]\ntoken = "t"\ncontrol-cas = "BAD"\n', "relay.control-cas"),
    }


def _daemon_args(command: str, config: Path) -> list[str]:
    return ["--config", str(config)] if command == "client" else [command, "--config", str(config)]


@pytest.mark.parametrize("case", list(_file_key_cases(Path("/"))))
def test_dev_zero_as_a_file_key_is_one_line_and_exit_2(case: str, certs, tmp_path) -> None:
    """/dev/zero once read until MemoryError (~3 GB RSS). Now `connet check` and the daemon
    refuse it at once, naming the key, the file and what it is, with a small RSS."""
    command, text, key = _file_key_cases(certs)[case]
    config = tmp_path / "c.toml"
    config.write_text(text.replace("BAD", "/dev/zero"))
    fragments = (key, "/dev/zero", "is a character device, not a regular file")
    for args in (["check", "--config", str(config)], _daemon_args(command, config)):
        rss = assert_one_line_exit_2(args, tmp_path, *fragments)
        assert rss < 200 * 1024, f"{args[0]}: peak RSS {rss} KiB"


@pytest.mark.parametrize("case", ["client.token-file", "server.tokens-file", "server.key-file"])
def test_fifo_as_a_file_key_is_one_line_and_exit_2(case: str, certs, tmp_path) -> None:
    """A FIFO with no writer once hung `connet check` and the daemon in open() with no
    message; now both say what it is and exit 2 (a hang fails on the run's timeout)."""
    command, text, key = _file_key_cases(certs)[case]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    config = tmp_path / "c.toml"
    config.write_text(text.replace("BAD", str(fifo)))
    for args in (["check", "--config", str(config)], _daemon_args(command, config)):
        assert_one_line_exit_2(args, tmp_path, key, str(fifo), "is a FIFO (named pipe), not a regular file")


@pytest.mark.parametrize("shape", ["arrays", "inline-tables", "dotted-key"])
def test_deeply_nested_toml_is_one_line_and_exit_2(shape: str, tmp_path) -> None:
    """Nesting once ended in a RecursionError traceback; it is refused before parsing."""
    depth = 50_000
    value = {
        "arrays": "x = " + "[" * depth + "]" * depth,
        "inline-tables": "x = " + "{a = " * depth + "1" + "}" * depth,
        "dotted-key": "a." * depth + "a = 1",
    }[shape]
    config = tmp_path / "deep.toml"
    config.write_text(f'[client]\ntoken = "t"\n{value}\n')
    expected = "a dotted key of more than 10 parts" if shape == "dotted-key" else "nested deeper than 10 levels"
    for args in (["check", "--config", str(config)], ["--config", str(config)]):
        assert_one_line_exit_2(args, tmp_path, str(config), "line 3", expected)


def test_a_token_too_long_for_the_authenticate_frame_is_refused_by_check(tmp_path) -> None:
    """A 70 KiB token once passed `connet check`, then the client looped forever on an
    Authenticate it could not encode. It is refused naming the key, never echoed."""
    token = "k" * (70 * 1024)
    token_file = tmp_path / "token.txt"
    token_file.write_text(token[: 63 * 1024] + "\n")  # under the file limit, over the token limit
    configs = {
        "client.token": f'[client]\ntoken = "{token}"\n',
        "client.token-file": f'[client]\ntoken-file = "{token_file}"\n',
        "relay.token": f'[relay]\ntoken = "{token}"\n',
        "server.tokens": f"[server]\ncert-file = \"c\"\nkey-file = \"k\"\ntokens = {toml_list(['ok', token])}\n",
    }
    for key, text in configs.items():
        config = tmp_path / "c.toml"
        config.write_text(text)
        rc, _, lines = run_measured(["check", "--config", str(config)], tmp_path)
        assert rc == 2 and len(lines) == 1, (key, rc, lines[-3:])
        assert f"{key}: " in lines[0] and "bytes long; the longest that fits the protocol's Authenticate" in lines[0]
        assert "kkkk" not in lines[0]


# --- padded first messages over real QUIC --------------------------------------------------------


def padded(fields: dict) -> bytes:
    """A frame of ``fields`` plus as many empty arrays as fit 64 KiB: valid msgpack, a known
    message with one unknown field, ~65 000 objects to build."""
    count = MAX_FRAME_SIZE - len(msgpack.packb(fields)) - 16
    payload = msgpack.packb({**fields, "pad": [[]] * count})
    while len(payload) > MAX_FRAME_SIZE:
        count -= len(payload) - MAX_FRAME_SIZE
        payload = msgpack.packb({**fields, "pad": [[]] * count})
    return len(payload).to_bytes(4, "big") + payload


async def test_padded_first_messages_are_refused_and_the_server_keeps_serving(daemons, certs) -> None:
    """An Authenticate with a valid token padded with ~65k empty arrays (and a Hello to the
    relay padded likewise) once cost tens of ms of decoding and was then accepted (unknown
    fields are ignored). It is refused with PROTOCOL_ERROR; honest sessions go on."""
    server, status_port = server_with_status(daemons, certs, f"tokens = {toml_list(TOKENS)}\n")
    endpoint = await bind_endpoint()
    sessions: list[ControlSession] = []
    try:
        honest = await ControlSession.open(endpoint, server, TOKENS[2])
        sessions.append(honest)
        await honest.announce("web", "source", Identity.new())
        await honest.wait(lambda: honest.grant_for("web", "source"))
        relay_addr, relay_cert, grant = honest.grant_for("web", "source")
        mark = server.daemon.mark()

        async def control_attack() -> int:
            conn = await endpoint.dial(HostPort("127.0.0.1", server.control_port), alpn=ALPN_CONTROL,
                                       trust=control_trust(server), timeout=10)
            await (await conn.open_stream()).write(padded({"t": "auth", "token": TOKENS[2]}))
            return (await asyncio.wait_for(conn.wait_closed(), 10)).code

        async def relay_attack() -> int:
            identity = Identity.new()
            conn = await endpoint.dial(relay_addr, alpn=ALPN_RELAY, trust=Trust(pinned_der=relay_cert), timeout=10)
            await (await conn.open_stream()).write(padded({"t": "hello", "certificate": identity.der,
                                                           "grants": [grant]}))
            return (await asyncio.wait_for(conn.wait_closed(), 10)).code

        codes = await asyncio.gather(*(control_attack() for _ in range(5)), *(relay_attack() for _ in range(5)))
        assert codes == [CloseCode.PROTOCOL_ERROR] * 10
        refused = r"WARNING connet\.(control|relay): .*malformed msgpack: .* exceeds max_array_len"
        # the server logs each refusal after closing the connection: wait for the tenth line
        server.daemon.wait_for(refused, 10, start=mark, count=10)
        refusals = lines_matching(server.daemon, refused, mark)
        assert len(refusals) == 10, refusals
        # everyone else is still served: a new session, the honest one, the status endpoint
        sessions.append(await ControlSession.open(endpoint, server, TOKENS[1]))
        assert not honest.task.done()
        assert (await status_get(status_port))["control"]["counters"]["handshake_failures"] >= 5
    finally:
        for session in sessions:
            await session.close()
        await endpoint.close()
    assert "Traceback" not in server.daemon.log()


# --- slowloris against the status endpoint --------------------------------------------------------


@pytest.mark.parametrize("spread", ["one-address", "70-addresses"])
async def test_slowloris_cannot_starve_status_readers(daemons, certs, spread: str) -> None:
    """70 sockets that reconnect as soon as they are dropped and trickle a request head a byte
    at a time once cut normal GETs to 5 of 28. Now the GETs from 127.0.0.2 all succeed, with
    the 70 from 127.0.0.1 (the per-address bound) or each from its own address in
    127.0.1.0/24 (the overall bound: the oldest silent one is evicted). The attack is
    bounded: 70 sockets, a byte per 0.2 s per socket, a reconnect at most every 0.1 s per
    socket, for as long as the 28 GETs take."""
    server, status_port = server_with_status(daemons, certs, f"tokens = {toml_list(TOKENS)}\n")
    stop = asyncio.Event()
    all_connected = asyncio.Event()
    connects = 0

    async def slowloris(source: str) -> None:
        nonlocal connects
        while not stop.is_set():
            connects += 1
            if connects >= 70:
                all_connected.set()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", status_port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.1)  # bounded reconnect rate, even when refused
                continue
            try:
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    if stop.is_set():
                        break
                    await asyncio.sleep(0.2)  # one byte at a time: the head never completes
            except OSError:
                await asyncio.sleep(0.1)  # dropped by the server: reconnect, bounded
            finally:
                writer.close()

    async def readers() -> list[bool]:
        outcomes = []
        for _ in range(28):
            try:
                outcomes.append((await status_get(status_port, timeout=5))["role"] == "server")
            except (OSError, TimeoutError, AssertionError, json.JSONDecodeError):
                outcomes.append(False)
            await asyncio.sleep(0.1)  # a dashboard's polling pace, compressed; not a wait for an event
        return outcomes

    async with asyncio.TaskGroup() as tg:
        sources = ["127.0.0.1"] * 70 if spread == "one-address" else [f"127.0.1.{i + 1}" for i in range(70)]
        attackers = [tg.create_task(slowloris(source)) for source in sources]
        try:
            await asyncio.wait_for(all_connected.wait(), 20)  # the attack is in place first
            outcomes = await readers()
        finally:
            stop.set()
    assert all(task.done() for task in attackers)
    assert outcomes.count(True) == 28, f"{outcomes.count(True)} of 28 GETs answered"
    assert "Traceback" not in server.daemon.log()


# --- the CA file a running client or relay reads at each dial ----------------------------------


async def test_a_ca_file_swapped_for_a_fifo_or_dev_zero_fails_the_dial_at_once(tmp_path) -> None:
    """A client re-reads server-cas (a relay control-cas) whenever it dials control. Swapped
    for a FIFO or /dev/zero while it runs, the dial fails at once with a DialError naming the
    file, instead of blocking the event loop in open() or reading until MemoryError."""
    import threading

    from connet_core.errors import DialError

    fifo = tmp_path / "ca.fifo"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock_a_stuck_reader() -> None:
        # if a dial ever blocks in open() on the FIFO, open it for writing and close it after
        # 5 s, so the reader sees EOF and the test fails on its assertion instead of hanging
        if not done.wait(5):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader: nothing is stuck

    watchdog = threading.Thread(target=unblock_a_stuck_reader, daemon=True)
    watchdog.start()
    endpoint = await bind_endpoint()
    try:
        for path, what in ((fifo, "is a FIFO (named pipe)"), (Path("/dev/zero"), "is a character device")):
            with pytest.raises(DialError) as failed:
                await endpoint.dial(HostPort("127.0.0.1", 9), alpn=ALPN_CONTROL,
                                    trust=Trust(server_name="127.0.0.1", cafile=path), timeout=5)
            assert f"CA file {path}: {what}, not a regular file" in str(failed.value)
    finally:
        done.set()
        watchdog.join(10)
        await endpoint.close()

"""connet_quic.admission: Retry packets, stateless tokens, the admission budgets and the
per-cause log limit; and a real handshake through a Retry on each QUIC library."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from aioquic.quic.packet import encode_quic_retry

import connet_quic
from connet_quic import admission
from connet_quic.admission import Admission, RetryTokens, Verdict, retry_packet
from connet_quic.refusals import CauseLog, limit_library_log

from test_quic_transport import ALPN, peers, transport  # noqa: F401 - the fixture, parametrized per library

ADDR = ("127.0.0.2", 5000)


@pytest.mark.parametrize("version", [admission.QUIC_V1, admission.QUIC_V2])
def test_retry_packet_is_the_one_aioquic_builds(version: int) -> None:
    args = dict(destination_cid=b"c" * 8, source_cid=b"s" * 8, original_destination_cid=b"o" * 8, retry_token=b"t" * 40)
    expected = encode_quic_retry(version=version, **args)
    assert retry_packet(version, args["destination_cid"], args["source_cid"], args["original_destination_cid"],
                        args["retry_token"]) == expected


def test_no_retry_for_an_unknown_version() -> None:
    assert retry_packet(0x1A2A3A4A, b"c", b"s", b"o", b"t") is None


def test_tokens_bind_address_cid_and_time() -> None:
    tokens = RetryTokens(lifetime=10.0)
    token = tokens.issue(ADDR, b"original", b"retrycid", now=100.0)
    assert tokens.validate(ADDR, token, b"retrycid", now=101.0) == b"original"
    assert tokens.validate(("127.0.0.3", 5000), token, b"retrycid", now=101.0) is None  # another host
    assert tokens.validate(("127.0.0.2", 5001), token, b"retrycid", now=101.0) is None  # another port
    assert tokens.validate(ADDR, token, b"othercid", now=101.0) is None  # not sent to the Retry's CID
    assert tokens.validate(ADDR, token, b"retrycid", now=111.0) is None  # expired
    forged = token[:-1] + bytes([token[-1] ^ 1])
    assert tokens.validate(ADDR, forged, b"retrycid", now=101.0) is None
    assert RetryTokens().validate(ADDR, token, b"retrycid", now=101.0) is None  # another process's key
    assert tokens.validate(ADDR, b"\x01short", b"retrycid", now=101.0) is None


def test_a_host_over_its_budget_is_asked_for_a_retry_and_then_admitted() -> None:
    gate = Admission()
    verdicts = [gate.initial(ADDR, bytes([i]) * 8, b"", now=0.0).verdict for i in range(admission.HOST_BURST + 5)]
    assert verdicts.count(Verdict.ACCEPT) == admission.HOST_BURST
    assert verdicts[admission.HOST_BURST:] == [Verdict.RETRY] * 5
    # another host still has its own budget
    assert gate.initial(("127.0.0.9", 1), b"x" * 8, b"", now=0.0).verdict is Verdict.ACCEPT
    # the client that answers the Retry gets in, with both connection IDs for its transport parameters
    token = gate.tokens.issue(ADDR, b"original", b"retrycid", now=0.0)
    decision = gate.initial(ADDR, b"retrycid", token, now=0.1)
    assert decision.verdict is Verdict.ACCEPT
    assert (decision.original_dcid, decision.retry_scid) == (b"original", b"retrycid")
    assert gate.initial(ADDR, b"retrycid", b"\x01" + bytes(40), now=0.1).cause == "bad_token"


def test_unvalidated_handshakes_never_take_the_validated_slots() -> None:
    gate = Admission()
    tickets = []
    for i in range(admission.UNVALIDATED_PENDING):
        decision = gate.initial((f"127.1.{i}.1", 1), bytes([i]) * 8, b"", now=float(i))
        assert decision.verdict is Verdict.ACCEPT
        tickets.append(decision.ticket)
    assert gate.initial(("127.2.0.1", 1), b"y" * 8, b"", now=100.0).verdict is Verdict.RETRY
    token = gate.tokens.issue(ADDR, b"original", b"retrycid", now=100.0)
    assert gate.initial(ADDR, b"retrycid", token, now=100.0).verdict is Verdict.ACCEPT
    for ticket in tickets:
        gate.finished(ticket)
    assert gate.pending_unvalidated == 0 and gate.pending_validated == 1


def test_validated_pending_caps_per_socket() -> None:
    gate = Admission()
    for i in range(admission.VALIDATED_PENDING_PER_SOCKET):
        cid = bytes([i]) * 8
        assert gate.initial(ADDR, cid, gate.tokens.issue(ADDR, b"o", cid, 0.0), now=0.0).verdict is Verdict.ACCEPT
    cid = b"z" * 8
    assert gate.initial(ADDR, cid, gate.tokens.issue(ADDR, b"o", cid, 0.0), now=0.0).cause == "pending_full"


def test_validated_handshakes_that_fail_at_once_are_bounded_all_hosts_together() -> None:
    """An attacker with a real QUIC stack answers Retries, and a failed handshake frees its
    slot at once: the pending caps alone would admit every token-bearing Initial."""
    gate = Admission()
    admitted = 0
    for i in range(5000):  # 1 s of them from 64 hosts, each handshake over at once
        addr = (f"127.0.1.{i % 64}", 40000 + i)
        cid = i.to_bytes(8, "big")
        decision = gate.initial(addr, cid, gate.tokens.issue(addr, b"o", cid, 0.5), now=0.5 + i / 5000)
        if decision.verdict is Verdict.ACCEPT:
            admitted += 1
            gate.finished(decision.ticket)
        else:
            assert decision.cause in ("validated_rate", "host_rate")
    assert admitted <= admission.VALIDATED_GLOBAL_BURST + admission.VALIDATED_GLOBAL_RATE


def test_ipv6_hosts_are_counted_by_their_64() -> None:
    assert admission.host_key("2001:db8:1:2:aaaa::1") == admission.host_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert admission.host_key("2001:db8:1:3::1") != admission.host_key("2001:db8:1:2::1")
    assert admission.host_key("192.0.2.7") == "192.0.2.7"
    gate = Admission()
    # one /64's addresses share one budget of unvalidated handshakes: the rest are asked for a Retry
    decisions = [gate.initial((f"2001:db8::{i:x}", 4433), i.to_bytes(8, "big"), b"", now=0.0) for i in range(1, 100)]
    accepted = sum(d.verdict is Verdict.ACCEPT for d in decisions)
    assert accepted == admission.HOST_BURST
    assert {d.cause for d in decisions if d.verdict is not Verdict.ACCEPT} == {"host_rate"}


def test_cause_log_says_how_many_it_suppressed() -> None:
    log = CauseLog(interval=10.0)
    assert log.note("alpn", 0.0) == 0
    assert [log.note("alpn", t) for t in (1.0, 2.0, 3.0)] == [None, None, None]
    assert log.note("other", 3.0) == 0  # per cause
    assert log.note("alpn", 10.5) == 3


async def test_a_handshake_through_a_retry(transport: connet_quic.QuicTransport) -> None:  # noqa: F811
    """The accepting endpoint asks every client for a Retry: both libraries' clients answer
    it and get in, and the Retry is counted."""
    async with peers(transport) as (a, b):
        b.endpoint._admission.always_retry = True
        dialed = await asyncio.wait_for(a.endpoint.dial(b.addr, alpn=ALPN, trust=b.trust()), 10)
        accepted = await asyncio.wait_for(b.endpoint.accept(), 10)
        stream = await dialed.open_stream()
        await stream.write(b"after a retry")
        assert await (await accepted.accept_stream()).read() == b"after a retry"
        # one per datagram of the client's first flight (qh3's ClientHello takes two)
        assert b.endpoint.counters["quic_retries_sent"] >= 1
        assert accepted.remote_address == a.endpoint.local_address


def test_the_library_warning_is_limited_per_message_not_per_connection(caplog: pytest.LogCaptureFixture) -> None:
    """aioquic prefixes each line with its connection's ID: 50 failed handshakes are one line."""
    limit_library_log()
    library = logging.getLogger("quic")
    with caplog.at_level(logging.WARNING, logger="quic"):
        for i in range(50):
            library.warning("[%016x] Error: 376, reason: a test's own reason %d", i, 7)
        library.warning("[%016x] Error: 376, reason: another reason", 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "quic"]
    assert len(lines) == 2, lines
    assert "a test's own reason" in lines[0] and "another reason" in lines[1]


def test_a_peer_varying_its_reason_cannot_make_each_library_line_new(caplog: pytest.LogCaptureFixture) -> None:
    """qh3 logs a peer's close reason at warning level: the peer chooses the text."""
    limit_library_log()
    library = logging.getLogger("quic")
    # the limit is per process: a template no other test logs (real qh3 connections of
    # earlier tests log "Native peer close: %r" itself)
    template = f"Native peer close ({uuid.uuid4().hex}): %r"
    with caplog.at_level(logging.WARNING, logger="quic"):
        for i in range(50):
            library.warning(template, f"reason number {i} from a chatty peer")
    lines = [r.getMessage() for r in caplog.records if r.name == "quic"]
    assert len(lines) == 1, lines

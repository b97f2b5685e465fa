"""Property tests of the identity proof machines (connet_core/protocol/identity.py).

A dialer and a listener machine talk to each other in memory over real framing (frame() and
FrameDecoder), so a cut stream is a cut byte stream. The right key is always accepted; any
tampering is refused with the right close code and never accepted; a finished machine
raises on every further call.
"""

from __future__ import annotations

import datetime
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connet_core.certs import make_identity, sign_proof
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.framing import FrameDecoder, frame
from connet_core.protocol.identity import (
    MIN_NONCE_SIZE,
    Accepted,
    Authorize,
    AuthorizeAt,
    Dialer,
    Listener,
    ProofStateError,
    Refused,
    Step,
    Wait,
)
from connet_core.protocol.messages import ALPN_PEER, ALPN_RELAY, Challenge, Hello, Proof, Welcome

PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ed25519_identity() -> tuple[bytes, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed-peer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER), key


# (DER certificate, its key): two ECDSA P-256 and one Ed25519, made once (key generation is
# the slow part, and nothing here depends on which key it is beyond its type).
IDENTITIES = [make_identity(f"peer-{i}")[1:] for i in range(2)] + [_ed25519_identity()]

identities = st.sampled_from(range(len(IDENTITIES)))
nonces = st.binary(min_size=MIN_NONCE_SIZE, max_size=64)
hashes_ = st.binary(min_size=32, max_size=32)
alpns = st.sampled_from([ALPN_PEER, ALPN_RELAY, "connet-peer/2"])
grant_lists = st.lists(st.binary(min_size=1, max_size=80), max_size=3).map(tuple)
step_timeouts = st.floats(min_value=0.01, max_value=60.0)
authorize_ats = st.sampled_from(list(AuthorizeAt))


@dataclass
class Wire:
    """One direction of the proof stream: framed bytes, optionally rewritten in flight."""

    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    pending: deque = field(default_factory=deque)  # frames not yet fed to the decoder
    sent: list = field(default_factory=list)  # every message put on the wire
    passed: list = field(default_factory=list)  # what left the wire after ``edit``
    edit: Callable | None = None  # message -> message, or None to drop it
    # (n, fraction): the stream ends inside the n-th frame, after that fraction of its bytes
    cut: tuple[int, float] | None = None
    ended: bool = False

    def send(self, messages) -> None:
        for msg in messages:
            self.sent.append(msg)
            if self.edit is not None:
                msg = self.edit(msg)
                if msg is None:
                    continue
            if self.ended:
                continue
            self.passed.append(msg)
            data = frame(msg)
            if self.cut is not None and len(self.passed) == self.cut[0] + 1:
                data = data[: int(self.cut[1] * len(data))]
                self.ended = True
            self.pending.append(data)

    def next(self):
        """The next message, "eof" when the stream ended (cut), or None if nothing is due."""
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            if not self.pending:
                return "eof" if self.ended else None
            data = self.pending.popleft()
            if data:
                self.decoder.feed(data)


@dataclass
class Run:
    dialer: Dialer
    listener: Listener
    to_listener: Wire
    to_dialer: Wire
    asked: list  # the Authorize requests the glue answered


def run(
    dialer: Dialer,
    listener: Listener,
    *,
    authorize: Callable[[Authorize], object] = lambda request: "ctx",
    to_listener: Wire | None = None,
    to_dialer: Wire | None = None,
    clock: Callable[[str], float] = lambda event: 0.0,
) -> Run:
    """Drive both machines until neither can move: what the asyncio glue does, in memory.
    ``clock(event)`` gives ``now`` for each call, so a test can make one step late."""
    to_listener, to_dialer = to_listener or Wire(), to_dialer or Wire()
    asked: list = []
    to_listener.send(dialer.start(clock("dialer.start")).send)
    to_dialer.send(listener.start(clock("listener.start")).send)
    sides = ((listener, to_listener, to_dialer, "listener"), (dialer, to_dialer, to_listener, "dialer"))
    moved = True
    while moved:
        moved = False
        for machine, inbox, outbox, name in sides:
            pending = machine.pending
            if isinstance(pending, Authorize):
                asked.append(pending)
                answer = authorize(pending)
                now = clock(f"{name}.authorized")
                step = machine.refuse(answer.code, answer.reason) if isinstance(answer, Refused) else machine.authorized(now, answer)
            elif isinstance(pending, Wait):
                msg = inbox.next()
                if msg is None:
                    continue
                if msg == "eof":
                    step = machine.abort(CloseCode.PROTOCOL_ERROR, "stream ended")
                else:
                    step = machine.receive(msg, clock(f"{name}.receive.{type(msg).__name__}"))
            else:
                continue
            assert isinstance(step, Step)
            outbox.send(step.send)
            moved = True
    return Run(dialer, listener, to_listener, to_dialer, asked)


def pair(ident: int, nonce: bytes, listener_hash: bytes, alpn: str, grants=(), authorize_at=AuthorizeAt.HELLO,
         step_timeout: float = 5.0, *, key_of: int | None = None, dialer_hash: bytes | None = None,
         dialer_alpn: str | None = None) -> tuple[Dialer, Listener]:
    cert, key = IDENTITIES[ident]
    if key_of is not None:
        key = IDENTITIES[key_of][1]
    dialer = Dialer(cert, key, dialer_hash or listener_hash, dialer_alpn or alpn, grants, step_timeout)
    listener = Listener(listener_hash, alpn, nonce, authorize_at, step_timeout)
    return dialer, listener


def assert_refused(r: Run, code: int) -> None:
    """Neither side accepted; the listener refused with ``code``; the dialer never saw a
    Welcome (it is still waiting, or it refused)."""
    assert isinstance(r.listener.outcome, Refused), r.listener.outcome
    assert r.listener.outcome.code == code, (CloseCode.describe(r.listener.outcome.code), r.listener.outcome.reason)
    hello = next(m for m in r.to_listener.passed if isinstance(m, Hello))
    assert r.listener.outcome.hash == hashlib.sha256(hello.certificate).digest()  # who, for the log
    assert not isinstance(r.dialer.outcome, Accepted)
    assert not any(isinstance(m, Welcome) for m in r.to_dialer.sent)


# --- the right key ------------------------------------------------------------------------


@PROFILE
@given(identities, nonces, hashes_, alpns, grant_lists, authorize_ats, step_timeouts,
       st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=8, max_size=8))
def test_the_right_key_is_always_accepted(ident, nonce, listener_hash, alpn, grants, at, step, fractions):
    dialer, listener = pair(ident, nonce, listener_hash, alpn, grants, at, step)
    # each call comes a fraction of step/8 after the previous one: with at most 8 calls,
    # every message and decision is in time, however the steps fall
    advances = iter(fractions)
    now = [0.0]

    def clock(event: str) -> float:
        now[0] += next(advances, 0.0) * step / 8 * 0.99
        return now[0]

    r = run(dialer, listener, clock=clock, authorize=lambda request: ("ctx", request.hash))
    cert = IDENTITIES[ident][0]
    cert_hash = hashlib.sha256(cert).digest()
    assert r.listener.outcome == Accepted(cert, cert_hash, grants, ("ctx", cert_hash))
    assert r.dialer.outcome == Accepted(b"", listener_hash)
    assert [type(m) for m in r.to_listener.sent] == [Hello, Proof]
    assert [type(m) for m in r.to_dialer.sent] == [Challenge, Welcome]
    assert r.asked == [Authorize(cert, cert_hash, grants, r.asked[0].deadline)]
    assert r.listener.state == r.dialer.state == "accepted"


# --- tampering ------------------------------------------------------------------------------


@PROFILE
@given(identities, identities, nonces, hashes_, alpns, authorize_ats)
def test_another_key_is_refused(ident, other, nonce, listener_hash, alpn, at):
    assume(ident != other)
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at, key_of=other)
    r = run(dialer, listener)
    assert_refused(r, CloseCode.PROOF_FAILED)
    if at is AuthorizeAt.PROOF:
        assert r.asked == []  # grants are never looked at for an unproven key


@PROFILE
@given(identities, nonces, nonces, hashes_, alpns)
def test_another_nonce_is_refused(ident, nonce, other_nonce, listener_hash, alpn):
    """The dialer signs a nonce other than the one the listener sent (a replayed proof)."""
    assume(nonce != other_nonce)
    dialer, listener = pair(ident, nonce, listener_hash, alpn)
    swap = Wire(edit=lambda m: Challenge(other_nonce) if isinstance(m, Challenge) else m)
    assert_refused(run(dialer, listener, to_dialer=swap), CloseCode.PROOF_FAILED)


@PROFILE
@given(identities, nonces, hashes_, hashes_, alpns)
def test_a_proof_for_another_listener_is_refused(ident, nonce, listener_hash, other_hash, alpn):
    assume(listener_hash != other_hash)
    dialer, listener = pair(ident, nonce, listener_hash, alpn, dialer_hash=other_hash)
    assert_refused(run(dialer, listener), CloseCode.PROOF_FAILED)


@PROFILE
@given(identities, nonces, hashes_, alpns, alpns)
def test_a_proof_for_another_alpn_is_refused(ident, nonce, listener_hash, alpn, other_alpn):
    assume(alpn != other_alpn)
    dialer, listener = pair(ident, nonce, listener_hash, alpn, dialer_alpn=other_alpn)
    assert_refused(run(dialer, listener), CloseCode.PROOF_FAILED)


@PROFILE
@given(identities, identities, nonces, hashes_, alpns, authorize_ats)
def test_a_hello_naming_another_certificate_is_refused(ident, other, nonce, listener_hash, alpn, at):
    """A man in the middle swaps the certificate in Hello for one it wants to be taken for."""
    assume(ident != other)
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at)
    swap = Wire(edit=lambda m: Hello(IDENTITIES[other][0], m.grants) if isinstance(m, Hello) else m)
    assert_refused(run(dialer, listener, to_listener=swap), CloseCode.PROOF_FAILED)


@PROFILE
@given(identities, nonces, hashes_, alpns, authorize_ats, st.sampled_from([CloseCode.UNKNOWN_PEER, CloseCode.GRANT_INVALID]))
def test_the_glue_refusal_is_final(ident, nonce, listener_hash, alpn, at, code):
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at)
    r = run(dialer, listener, authorize=lambda request: Refused(code, "no"))
    assert_refused(r, code)
    if at is AuthorizeAt.HELLO:
        assert r.to_dialer.sent == []  # not even a challenge for a certificate we do not know


# --- messages out of order, duplicated, dropped ---------------------------------------------

LISTENER_NONCE = bytes(range(32))
LISTENER_HASH = hashlib.sha256(b"listener").digest()
D_CERT, D_KEY = IDENTITIES[0]
GOOD_PROOF = Proof(sign_proof(D_KEY, LISTENER_NONCE, LISTENER_HASH, ALPN_PEER))
TO_LISTENER = {"hello": Hello(D_CERT), "proof": GOOD_PROOF, "challenge": Challenge(LISTENER_NONCE),
               "welcome": Welcome(), "other-hello": Hello(IDENTITIES[1][0])}
TO_DIALER = {"challenge": Challenge(LISTENER_NONCE), "welcome": Welcome(), "hello": Hello(D_CERT),
             "proof": GOOD_PROOF}


@PROFILE
@given(st.lists(st.sampled_from(sorted(TO_LISTENER)), min_size=1, max_size=6), authorize_ats)
def test_listener_accepts_only_hello_then_proof(sequence, at):
    listener = Listener(LISTENER_HASH, ALPN_PEER, LISTENER_NONCE, at)
    listener.start(0.0)
    fed = []
    for name in sequence:
        if isinstance(listener.pending, Authorize):
            listener.authorized(0.0)
        if listener.outcome is not None:
            break
        fed.append(name)
        listener.receive(TO_LISTENER[name], 0.0)
    if isinstance(listener.pending, Authorize):
        listener.authorized(0.0)
    if fed == ["hello", "proof"]:
        assert isinstance(listener.outcome, Accepted)
    elif fed[:2] == ["other-hello", "proof"]:
        other_hash = hashlib.sha256(IDENTITIES[1][0]).digest()
        assert listener.outcome == Refused(CloseCode.PROOF_FAILED, listener.outcome.reason, hash=other_hash)
    elif fed[0] in ("hello", "other-hello") and len(fed) == 1:
        assert listener.outcome is None  # still waiting for the proof
    else:
        assert isinstance(listener.outcome, Refused) and listener.outcome.code == CloseCode.PROTOCOL_ERROR


@PROFILE
@given(st.lists(st.sampled_from(sorted(TO_DIALER)), min_size=1, max_size=6))
def test_dialer_accepts_only_challenge_then_welcome(sequence):
    dialer = Dialer(D_CERT, D_KEY, LISTENER_HASH, ALPN_PEER)
    dialer.start(0.0)
    fed = []
    for name in sequence:
        if dialer.outcome is not None:
            break
        fed.append(name)
        dialer.receive(TO_DIALER[name], 0.0)
    if fed == ["challenge", "welcome"]:
        assert dialer.outcome == Accepted(b"", LISTENER_HASH)
    elif fed == ["challenge"]:
        assert dialer.outcome is None
    else:
        assert isinstance(dialer.outcome, Refused) and dialer.outcome.code == CloseCode.PROTOCOL_ERROR


@PROFILE
@given(identities, nonces, hashes_, alpns, authorize_ats, st.data())
def test_a_cut_stream_is_never_accepted(ident, nonce, listener_hash, alpn, at, data):
    """Either direction ends after any number of bytes short of the whole exchange."""
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at)
    direction = data.draw(st.sampled_from(["to_listener", "to_dialer"]))
    # each direction carries two frames: cut inside either (a cut at 0 bytes of the second
    # is a stream that ends right after the first)
    cut = (data.draw(st.integers(0, 1)), data.draw(st.floats(min_value=0.0, max_value=1.0, exclude_max=True)))
    r = run(dialer, listener, **{direction: Wire(cut=cut)})
    assert not isinstance(r.dialer.outcome, Accepted)
    if direction == "to_listener":
        outcome = r.listener.outcome
    else:
        # the listener may have accepted (its Welcome was cut); the dialer must not have
        outcome = r.dialer.outcome
    assert isinstance(outcome, Refused) and (outcome.code, outcome.reason) == (CloseCode.PROTOCOL_ERROR, "stream ended")


# --- deadlines -------------------------------------------------------------------------------


LATE_EVENTS = ["listener.receive.Hello", "listener.receive.Proof", "listener.authorized", "dialer.receive.Challenge",
               "dialer.receive.Welcome"]


@PROFILE
@given(identities, nonces, hashes_, alpns, authorize_ats, st.sampled_from(LATE_EVENTS), step_timeouts,
       st.floats(min_value=1e-6, max_value=100.0))
def test_a_late_step_is_refused_with_timeout(ident, nonce, listener_hash, alpn, at, late, step, lateness):
    """One call comes after its step's deadline: that side refuses with timeout, and nobody
    accepts what came late."""
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at, step_timeout=step)
    now = [0.0]

    def clock(event: str) -> float:
        if event == late:
            now[0] += step + lateness  # past a deadline that was set no later than now[0] + step
        return now[0]

    r = run(dialer, listener, clock=clock)
    side = r.listener if late.startswith("listener") else r.dialer
    assert isinstance(side.outcome, Refused) and side.outcome.code == CloseCode.TIMEOUT
    assert not isinstance(r.dialer.outcome, Accepted)


@PROFILE
@given(authorize_ats, step_timeouts, st.floats(min_value=0.0, max_value=10.0))
def test_expire_refuses_only_after_the_deadline(at, step, extra):
    listener = Listener(LISTENER_HASH, ALPN_PEER, LISTENER_NONCE, at, step)
    wait = listener.start(1.0).then
    assert isinstance(wait, Wait) and wait.deadline == 1.0 + step
    assert listener.expire(wait.deadline + extra).then == Refused(CloseCode.TIMEOUT, "timed out waiting for Hello")
    early = Dialer(D_CERT, D_KEY, LISTENER_HASH, ALPN_PEER, step_timeout=step)
    early.start(1.0)
    with pytest.raises(ProofStateError):
        early.expire(1.0 + step / 2)  # a glue bug: it gave up before the deadline
    with pytest.raises(ProofStateError):
        early.receive(Challenge(LISTENER_NONCE), 1.0)  # and the machine stays broken


# --- finished machines -------------------------------------------------------------------


def every_call(machine):
    calls = [
        lambda: machine.start(0.0),
        lambda: machine.receive(Hello(D_CERT), 0.0),
        lambda: machine.receive(Challenge(LISTENER_NONCE), 0.0),
        lambda: machine.expire(1e9),
        lambda: machine.abort(CloseCode.PROTOCOL_ERROR, "x"),
    ]
    if isinstance(machine, Listener):
        calls += [lambda: machine.authorized(0.0), lambda: machine.refuse(CloseCode.UNKNOWN_PEER, "x")]
    return calls


@PROFILE
@given(identities, nonces, hashes_, alpns, authorize_ats,
       st.sampled_from(["accepted", "wrong-key", "out-of-order", "late", "aborted", "glue-refused"]), st.data())
def test_every_call_after_the_verdict_raises(ident, nonce, listener_hash, alpn, at, how, data):
    dialer, listener = pair(ident, nonce, listener_hash, alpn, authorize_at=at, key_of=1 - ident % 2 if how == "wrong-key" else None)
    if how == "accepted":
        run(dialer, listener)
    elif how == "wrong-key":
        run(dialer, listener)
        dialer.abort(CloseCode.PROOF_FAILED, "closed by the listener", by_peer=True)
    elif how == "out-of-order":
        listener.start(0.0)
        listener.receive(Proof(b"x"), 0.0)
        dialer.start(0.0)
        dialer.receive(Welcome(), 0.0)
    elif how == "late":
        listener.start(0.0)
        listener.receive(Hello(D_CERT), 100.0)
        dialer.start(0.0)
        dialer.expire(100.0)
    elif how == "aborted":
        listener.abort(CloseCode.PROTOCOL_ERROR, "stream ended")
        dialer.abort(CloseCode.UNKNOWN_PEER, "closed by the listener", by_peer=True)
    else:
        run(dialer, listener, authorize=lambda request: Refused(CloseCode.UNKNOWN_PEER, "no"))
        dialer.abort(CloseCode.UNKNOWN_PEER, "closed by the listener", by_peer=True)
    for machine in (dialer, listener):
        assert machine.outcome is not None
        assert machine.state == ("accepted" if how == "accepted" else "refused")
        outcome = machine.outcome
        call = data.draw(st.sampled_from(every_call(machine)))
        with pytest.raises(ProofStateError):
            call()
        assert machine.outcome is outcome  # a refused call changes nothing


def test_misuse_breaks_the_machine():
    listener = Listener(LISTENER_HASH, ALPN_PEER, LISTENER_NONCE)
    with pytest.raises(ProofStateError):
        listener.receive(Hello(D_CERT), 0.0)  # before start
    assert listener.state == "broken"
    for call in every_call(listener):
        with pytest.raises(ProofStateError):
            call()
    with pytest.raises(ValueError):
        Listener(LISTENER_HASH, ALPN_PEER, b"short")

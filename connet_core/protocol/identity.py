"""The identity proof (``connet-peer/1``, ``connet-relay/1``) as two sans-I/O state machines.

docs/protocol.md specifies the proof: the dialer sends ``Hello`` (its certificate, and to a
relay its grants), the listener answers ``Challenge`` with a fresh nonce, the dialer signs
(nonce, sha256 of the listener's certificate, ALPN) and sends ``Proof``, the listener checks
it and sends ``Welcome`` before it serves anything.

:class:`Dialer` and :class:`Listener` do no I/O and read no clock: the glue feeds them
messages and ``now`` and gets back a :class:`Step` — the messages to send, then exactly one
thing to do next:

- :class:`Wait`: read the next message (of type ``expected``) until ``deadline``, then call
  :meth:`receive`; if none came by then, call :meth:`expire`;
- :class:`Authorize` (listener only): the glue decides whether this certificate may be served
  (a client: is it a peer control matched to us; a relay: are its grants valid) and answers
  :meth:`Listener.authorized` or :meth:`Listener.refuse`. That decision stays outside so the
  client and the relay share the machine;
- :class:`Accepted`: proven; the connection may be used;
- :class:`Refused`: close the connection with ``code`` (the listener) or give up on it (the
  dialer); ``reason`` is one line for the log.

A machine that has accepted or refused is finished, and one the glue misused (a call its
state does not expect) is broken: every further call raises :class:`ProofStateError`, like
h11's ``LocalProtocolError``, so a glue bug cannot quietly turn into a served connection.
The thin asyncio drivers are in :mod:`connet_core.protocol.identity_io`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connet_core.certs import sign_proof, verify_proof
from connet_core.model import certificate_hash
from connet_core.protocol.codec import Message
from connet_core.protocol.codes import CloseCode
from connet_core.protocol.messages import Challenge, Hello, Proof, Welcome

if TYPE_CHECKING:
    from connet_core.certs import PrivateKey

__all__ = [
    "Accepted",
    "Authorize",
    "AuthorizeAt",
    "Dialer",
    "Listener",
    "MIN_NONCE_SIZE",
    "ProofStateError",
    "Refused",
    "STEP_TIMEOUT",
    "Step",
    "Wait",
]

STEP_TIMEOUT = 5.0  # seconds for each message of the proof (and for the glue's decision)
MIN_NONCE_SIZE = 16  # a shorter nonce could repeat, and a repeated nonce lets a proof be replayed


class ProofStateError(RuntimeError):
    """A call the machine's state does not allow: it has finished, it was refused, or the
    glue called it out of order (which breaks it for good)."""


# --- what the machines tell the glue -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait:
    """Read the next message, which must be an ``expected``, until ``deadline`` (on the
    clock the glue passes as ``now``)."""

    expected: type
    deadline: float


@dataclass(frozen=True, slots=True)
class Authorize:
    """The listener asks the glue: may the dialer holding ``certificate`` (sha256 ``hash``),
    presenting ``grants``, be served? Answer by ``deadline``."""

    certificate: bytes
    hash: bytes
    grants: tuple[bytes, ...]
    deadline: float


@dataclass(frozen=True, slots=True)
class Accepted:
    """The proof succeeded. On the listener: the dialer's certificate, its hash, the grants
    it presented and whatever the glue passed to :meth:`Listener.authorized` (``context``,
    e.g. the matched peer). On the dialer: the listener's hash (``certificate`` is b"")."""

    certificate: bytes
    hash: bytes
    grants: tuple[bytes, ...] = ()
    context: object = None


@dataclass(frozen=True, slots=True)
class Refused:
    """The proof failed: close with ``code``. ``by_peer`` is True when the other side ended
    it (its close or reset code is ``code``); ``reason`` is one line for the log; ``hash``
    names the other side for the log once known (the listener learns it from Hello)."""

    code: int
    reason: str
    by_peer: bool = False
    hash: bytes = b""


Next = Wait | Authorize | Accepted | Refused


@dataclass(frozen=True, slots=True)
class Step:
    """Send ``send`` in order, then do ``then``."""

    send: tuple[Message, ...]
    then: Next


class AuthorizeAt(enum.Enum):
    """When the listener asks the glue to authorize the dialer."""

    # Right after Hello, before any challenge: a client refuses a certificate no matched
    # peer announced without spending a signature check on it.
    HELLO = "hello"
    # After a valid Proof: a relay checks grants only for a key that is proven, so a
    # client with the wrong key learns "proof-failed", never whether its grants were good.
    PROOF = "proof"


class _State(enum.Enum):
    IDLE = "idle"  # not started
    WAITING = "waiting"  # a message is due
    AUTHORIZING = "authorizing"  # the glue is deciding (listener)
    ACCEPTED = "accepted"
    REFUSED = "refused"
    BROKEN = "broken"  # the glue misused the machine


class _Machine:
    """What both sides share: states, step deadlines, the final states."""

    def __init__(self, step_timeout: float) -> None:
        if not step_timeout > 0:
            raise ValueError(f"step_timeout must be positive, not {step_timeout!r}")
        self._step_timeout = step_timeout
        self._state = _State.IDLE
        self._next: Next | None = None
        self._outcome: Accepted | Refused | None = None
        self._other_hash = b""  # the other side's certificate hash, once known

    @property
    def state(self) -> str:
        """``idle``, ``waiting``, ``authorizing``, ``accepted``, ``refused`` or ``broken``."""
        return self._state.value

    @property
    def outcome(self) -> Accepted | Refused | None:
        """The verdict once there is one."""
        return self._outcome

    @property
    def pending(self) -> Next | None:
        """What the glue should be doing now (the last step's ``then``)."""
        return self._next

    def expire(self, now: float) -> Step:
        """The glue stopped waiting (for a message or for its own decision) at ``now``:
        refused with ``timeout`` once the deadline has passed."""
        self._require(_State.WAITING, _State.AUTHORIZING, call="expire")
        assert isinstance(self._next, (Wait, Authorize))
        if now < self._next.deadline:
            self._break(f"expire at {now} before the deadline {self._next.deadline}")
        return self._refuse(CloseCode.TIMEOUT, f"timed out waiting for {self._waiting_for()}")

    def abort(self, code: int, reason: str, by_peer: bool = False) -> Step:
        """Something below the machine ended the proof (a malformed frame, the stream ended,
        the connection closed or the stream was reset): refused with that code."""
        self._require(_State.IDLE, _State.WAITING, _State.AUTHORIZING, call="abort")
        return self._refuse(code, reason, by_peer)

    def receive(self, message: Message, now: float) -> Step:
        """The next message from the other side, received at ``now``."""
        self._require(_State.WAITING, _State.AUTHORIZING, call="receive")
        if self._state is _State.AUTHORIZING:
            # The other side must wait for our answer: speaking now breaks the protocol.
            return self._refuse(CloseCode.PROTOCOL_ERROR, f"unexpected {type(message).__name__} before our answer")
        assert isinstance(self._next, Wait)
        if now > self._next.deadline:
            return self._refuse(CloseCode.TIMEOUT, f"{type(message).__name__} came after the deadline")
        if not isinstance(message, self._next.expected):
            return self._refuse(
                CloseCode.PROTOCOL_ERROR, f"expected {self._next.expected.__name__}, got {type(message).__name__}"
            )
        return self._on_message(message, now)

    # --- for the subclasses --------------------------------------------------------------

    def _on_message(self, message: Message, now: float) -> Step:
        raise NotImplementedError

    def _waiting_for(self) -> str:
        if isinstance(self._next, Wait):
            return self._next.expected.__name__
        return "the authorization"

    def _step(self, send: tuple[Message, ...], then: Next) -> Step:
        self._next = then
        if isinstance(then, (Accepted, Refused)):
            self._outcome = then
            self._state = _State.ACCEPTED if isinstance(then, Accepted) else _State.REFUSED
        else:
            self._state = _State.WAITING if isinstance(then, Wait) else _State.AUTHORIZING
        return Step(send, then)

    def _wait(self, expected: type, now: float, send: tuple[Message, ...] = ()) -> Step:
        return self._step(send, Wait(expected, now + self._step_timeout))

    def _refuse(self, code: int, reason: str, by_peer: bool = False) -> Step:
        return self._step((), Refused(int(code), reason, by_peer, self._other_hash))

    def _require(self, *states: _State, call: str) -> None:
        if self._state in states:
            return
        if self._state is _State.REFUSED:
            assert isinstance(self._outcome, Refused)
            raise ProofStateError(
                f"{call}: the proof was refused ({CloseCode.describe(self._outcome.code)}: {self._outcome.reason})"
            )
        if self._state is _State.ACCEPTED:
            raise ProofStateError(f"{call}: the proof is already accepted")
        if self._state is _State.BROKEN:
            raise ProofStateError(f"{call}: the machine was misused before and is unusable")
        self._break(f"{call} is not allowed while {self._state.value}")

    def _break(self, why: str) -> None:
        self._state = _State.BROKEN
        raise ProofStateError(why)


class Dialer(_Machine):
    """The dialer's half: proves that it holds the key of ``certificate``.

    ``listener_hash`` is the sha256 of the certificate TLS pinned for the listener (the
    proof is bound to it, and to ``alpn``, so a listener cannot replay it elsewhere)."""

    def __init__(
        self,
        certificate: bytes,
        key: PrivateKey,
        listener_hash: bytes,
        alpn: str,
        grants: tuple[bytes, ...] = (),
        step_timeout: float = STEP_TIMEOUT,
    ) -> None:
        super().__init__(step_timeout)
        self._hello = Hello(certificate=certificate, grants=tuple(grants))
        self._key = key
        self._listener_hash = self._other_hash = listener_hash
        self._alpn = alpn

    def start(self, now: float) -> Step:
        """Send Hello, then wait for the Challenge."""
        self._require(_State.IDLE, call="start")
        return self._wait(Challenge, now, send=(self._hello,))

    def _on_message(self, message: Message, now: float) -> Step:
        if isinstance(message, Challenge):
            signature = sign_proof(self._key, message.nonce, self._listener_hash, self._alpn)
            return self._wait(Welcome, now, send=(Proof(signature),))
        assert isinstance(message, Welcome)
        return self._step((), Accepted(b"", self._listener_hash))


class Listener(_Machine):
    """The listener's half: serves nothing until the dialer has proven the key of the
    certificate it names and the glue has authorized that certificate.

    ``listener_hash`` is the sha256 of our own certificate; ``nonce`` a fresh random value
    (the glue draws it: the machine does no I/O), at least MIN_NONCE_SIZE bytes."""

    def __init__(
        self,
        listener_hash: bytes,
        alpn: str,
        nonce: bytes,
        authorize_at: AuthorizeAt = AuthorizeAt.HELLO,
        step_timeout: float = STEP_TIMEOUT,
    ) -> None:
        super().__init__(step_timeout)
        if len(nonce) < MIN_NONCE_SIZE:
            raise ValueError(f"the nonce must be at least {MIN_NONCE_SIZE} bytes, not {len(nonce)}")
        self._listener_hash = listener_hash
        self._alpn = alpn
        self._nonce = nonce
        self._authorize_at = authorize_at
        self._hello: Hello | None = None
        self._hash = b""
        self._context: object = None

    def start(self, now: float) -> Step:
        """Wait for the dialer's Hello."""
        self._require(_State.IDLE, call="start")
        return self._wait(Hello, now)

    def authorized(self, now: float, context: object = None) -> Step:
        """The glue's yes to :class:`Authorize`; ``context`` comes back in :class:`Accepted`."""
        self._require(_State.AUTHORIZING, call="authorized")
        assert isinstance(self._next, Authorize)
        if now > self._next.deadline:
            return self._refuse(CloseCode.TIMEOUT, "the authorization came after the deadline")
        self._context = context
        if self._authorize_at is AuthorizeAt.HELLO:
            return self._wait(Proof, now, send=(Challenge(self._nonce),))
        return self._welcome()

    def refuse(self, code: int, reason: str) -> Step:
        """The glue's no to :class:`Authorize` (``unknown-peer``, ``grant-invalid``, ...)."""
        self._require(_State.AUTHORIZING, call="refuse")
        return self._refuse(code, reason)

    def _on_message(self, message: Message, now: float) -> Step:
        if isinstance(message, Hello):
            self._hello = message
            self._hash = self._other_hash = certificate_hash(message.certificate)
            if self._authorize_at is AuthorizeAt.HELLO:
                return self._authorize(now)
            return self._wait(Proof, now, send=(Challenge(self._nonce),))
        assert isinstance(message, Proof) and self._hello is not None
        if not verify_proof(self._hello.certificate, message.signature, self._nonce, self._listener_hash, self._alpn):
            return self._refuse(CloseCode.PROOF_FAILED, "the proof does not match the certificate")
        if self._authorize_at is AuthorizeAt.PROOF:
            return self._authorize(now)
        return self._welcome()

    def _authorize(self, now: float) -> Step:
        assert self._hello is not None
        request = Authorize(self._hello.certificate, self._hash, self._hello.grants, now + self._step_timeout)
        return self._step((), request)

    def _welcome(self) -> Step:
        assert self._hello is not None
        accepted = Accepted(self._hello.certificate, self._hash, self._hello.grants, self._context)
        return self._step((Welcome(),), accepted)

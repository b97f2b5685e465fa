"""TLS 1.3 inside a stream (``ssl.MemoryBIO``): end-to-end encryption through a relay.

Both clients pin each other's per-run certificate, so the relay in between forwards
ciphertext it cannot read or alter. Half-close is TLS close_notify followed by FIN; an EOF
without close_notify means somebody cut the stream and is an error, never a clean end.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from connet_core.errors import ProtocolError
from connet_core.forward import CHUNK
from connet_core.protocol.codes import CloseCode
from connet_core.transport import Stream, TLSIdentity


def load_identity(ctx: ssl.SSLContext, identity: TLSIdentity) -> None:
    """Give ``ctx`` our certificate chain and key (PEM in memory)."""
    # load_cert_chain reads only files; the key never lives longer on disk than this call
    with tempfile.TemporaryDirectory(prefix="connet-tls-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(identity.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(identity.key_pem)
        ctx.load_cert_chain(cert, key)


def _context(server_side: bool, identity: TLSIdentity, peer_der: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    load_identity(ctx, identity)
    ctx.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(peer_der))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = False  # the peer is pinned by its exact certificate, checked below
    return ctx


class PinnedContexts:
    """SSL contexts for one local identity, one per (side, pinned peer): building a context
    reads the key, which is too slow to repeat for every tunneled connection."""

    def __init__(self, identity: TLSIdentity) -> None:
        self._identity = identity
        self._cache: dict[tuple[bool, bytes], ssl.SSLContext] = {}

    def get(self, server_side: bool, peer_der: bytes) -> ssl.SSLContext:
        key = (server_side, peer_der)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = self._cache[key] = _context(server_side, self._identity, peer_der)
        return ctx

    def forget(self, peer_der: bytes) -> None:
        """Drop the contexts pinned to ``peer_der`` (the peer is gone). Streams already
        wrapped keep theirs; a stream opened later would build a new one."""
        self._cache.pop((True, peer_der), None)
        self._cache.pop((False, peer_der), None)

    def __len__(self) -> int:
        return len(self._cache)


class TLSStream:
    """A :class:`connet_core.transport.Stream` that runs TLS over another stream."""

    def __init__(
        self, inner: Stream, *, server_side: bool, contexts: PinnedContexts, peer_der: bytes, initial: bytes = b""
    ) -> None:
        """``initial``: bytes already read from ``inner`` past the last protocol frame."""
        self._inner = inner
        self._peer_der = peer_der
        self._incoming = ssl.MemoryBIO()
        if initial:
            self._incoming.write(initial)
        self._outgoing = ssl.MemoryBIO()
        ctx = contexts.get(server_side, peer_der)
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_side=server_side)

    @property
    def stream_id(self) -> int:
        return self._inner.stream_id

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self._inner.write(data)

    async def _fill(self) -> None:
        data = await self._inner.read(CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLError as exc:
                raise ProtocolError(f"end-to-end TLS failed: {exc.reason or exc}", CloseCode.PROOF_FAILED) from None
        await self._flush()
        if self._tls.getpeercert(binary_form=True) != self._peer_der:
            raise ProtocolError("end-to-end TLS: the peer is not the pinned certificate", CloseCode.PROOF_FAILED)

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        while True:
            try:
                data = self._tls.read(max_bytes)
                return self._read_more(data, max_bytes) if data else data
            except ssl.SSLWantReadError:
                await self._flush()  # TLS 1.3 may owe the peer a post-handshake message
                await self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                raise ProtocolError("relayed stream cut without close_notify") from None
            except ssl.SSLError as exc:
                raise ProtocolError(f"end-to-end TLS failed: {exc.reason or exc}") from None

    def _read_more(self, data: bytes, max_bytes: int) -> bytes:
        """``data`` and the plaintext of further records already received, up to
        ``max_bytes``: one TLS record is at most 16 KiB, and a read per record would make the
        caller write (and wait on) TCP once per record instead of once per chunk."""
        parts = [data]
        got = len(data)
        while got < max_bytes:
            try:
                more = self._tls.read(max_bytes - got)
            except ssl.SSLError:
                break  # no whole record left, or the end / an error: the next read() says
            if not more:
                break
            parts.append(more)
            got += len(more)
        return data if len(parts) == 1 else b"".join(parts)

    async def write(self, data: bytes) -> None:
        if not self.write_nowait(data):
            await self.drain()

    def write_nowait(self, data: bytes) -> bool:
        try:
            self._tls.write(data)
        except ssl.SSLError as exc:  # after a fatal error on the read side
            raise ProtocolError(f"end-to-end TLS failed: {exc.reason or exc}") from None
        records = self._outgoing.read()
        return self._inner.write_nowait(records) if records else True

    async def drain(self) -> None:
        await self._inner.drain()

    async def write_eof(self) -> None:
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # TLS 1.3: our close_notify is out; the peer may still send
        await self._flush()
        await self._inner.write_eof()

    def reset(self, code: int) -> None:
        self._inner.reset(code)

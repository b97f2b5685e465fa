"""A transport plugin that wraps another transport and records every byte its streams
carry, as a third-party plugin would: used to show what a relay can see."""

from __future__ import annotations

from typing import Sequence

from connet_core import hookimpl
from connet_core.model import HostPort
from connet_core.transport import Connection, Endpoint, Stream, TLSIdentity, Transport, TransportOptions, Trust


class RecordingStream:
    def __init__(self, inner: Stream, log: bytearray) -> None:
        self._inner = inner
        self._log = log

    @property
    def stream_id(self) -> int:
        return self._inner.stream_id

    async def read(self, max_bytes: int = 65536) -> bytes:
        data = await self._inner.read(max_bytes)
        self._log += data
        return data

    async def write(self, data: bytes) -> None:
        self._log += data
        await self._inner.write(data)

    def write_nowait(self, data: bytes) -> bool:
        self._log += data
        return self._inner.write_nowait(data)

    async def drain(self) -> None:
        await self._inner.drain()

    async def write_eof(self) -> None:
        await self._inner.write_eof()

    def reset(self, code: int) -> None:
        self._inner.reset(code)


class RecordingConnection:
    def __init__(self, inner: Connection, log: bytearray) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def open_stream(self) -> Stream:
        return RecordingStream(await self._inner.open_stream(), self._log)

    async def accept_stream(self) -> Stream:
        return RecordingStream(await self._inner.accept_stream(), self._log)


class RecordingEndpoint:
    def __init__(self, inner: Endpoint, log: bytearray) -> None:
        self._inner = inner
        self._log = log

    @property
    def local_address(self) -> HostPort:
        return self._inner.local_address

    async def accept(self) -> Connection:
        return RecordingConnection(await self._inner.accept(), self._log)

    async def dial(self, address: HostPort, *, alpn: str, trust: Trust, timeout: float | None = None) -> Connection:
        return RecordingConnection(await self._inner.dial(address, alpn=alpn, trust=trust, timeout=timeout), self._log)

    async def close(self, code: int = 0, reason: str = "") -> None:
        await self._inner.close(code, reason)


class RecordingTransport:
    def __init__(self, inner: Transport, log: bytearray) -> None:
        self.name = "recording"
        self._inner = inner
        self.log = log

    async def bind(self, address: HostPort, *, identity: TLSIdentity | None, alpns: Sequence[str],
                   options: TransportOptions = TransportOptions()) -> Endpoint:
        return RecordingEndpoint(await self._inner.bind(address, identity=identity, alpns=alpns, options=options), self.log)


class RecordingPlugin:
    """Register with ``load_hooks(extra_plugins=[RecordingPlugin(inner)])``; select ``transport="recording"``."""

    def __init__(self, inner: Transport) -> None:
        self.transport = RecordingTransport(inner, bytearray())

    @hookimpl
    def connet_transport_names(self) -> list[str]:
        return ["recording"]

    @hookimpl
    def connet_transport(self, name: str) -> Transport | None:
        return self.transport if name == "recording" else None

"""The storage seam's object: a small async key/value store with namespaces."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    """Values are bytes; namespaces and keys are short ``[A-Za-z0-9_.-]`` strings.
    Writes are atomic: after a crash a key holds the old or the new value, never a mix.
    Errors are :class:`connet_core.errors.StoreError`."""

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The value, or None when the key is absent."""

    async def put(self, namespace: str, key: str, value: bytes) -> None: ...

    async def delete(self, namespace: str, key: str) -> None:
        """Remove the key; absent keys are fine."""

    async def keys(self, namespace: str) -> list[str]: ...

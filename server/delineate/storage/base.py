"""The Storage interface: an S3-shaped object store, one module per backend (local, s3).

Keys are ``downloads/<file_id>.zip`` (sources) and ``exports/<jobId>.zip`` (bundles); only
``keys.py`` builds them. Backends raise ``delineate.errors.StorageError`` for any failure they
cannot classify, so callers never match third-party exceptions.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import msgspec

CHUNK_SIZE = 64 * 1024


class ObjectInfo(msgspec.Struct, frozen=True):
    key: str
    size: int


class PresignedUrl(msgspec.Struct, frozen=True):
    url: str
    expires_at: float
    """Epoch seconds."""


class ObjectWriter(abc.ABC):
    """Streams one object in; nothing is visible under the key until ``complete``."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def complete(self) -> int:
        """Publish the object; return its size."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop everything written so far (idempotent)."""


class Storage(abc.ABC):
    name: str = "storage"

    async def start(self) -> None:
        """Prepare (create directories or the bucket)."""

    async def stop(self) -> None:
        """Release connections and threads."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, or None when there is no such object."""

    @abc.abstractmethod
    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def writer(self, key: str) -> ObjectWriter: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def presign(self, key: str, expires_in_s: int) -> PresignedUrl: ...

    @abc.abstractmethod
    async def check(self) -> bool:
        """True when the store answers; used by /health, must return within a second or two."""

"""Local-disk object store: the embedded default.

Objects are files under ``root``. Source keys that have no file fall back to the
deterministic demo content (``storage.demo``), so no fixture data is needed. Bundles are
written to ``<key>.<random>.part`` and renamed into place by ``complete``, so a reader
never sees half an object. Links are HMAC-signed paths served by ``api.files``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from delineate.errors import ObjectMissing, StorageError
from delineate.storage import demo, signing
from delineate.storage.base import CHUNK_SIZE, ObjectInfo, ObjectWriter, PresignedUrl, Storage
from delineate.storage.keys import is_valid_key
from delineate.storage.threads import BlockingCalls

FILES_ROUTE = "/v1/files/"
IO_THREADS = 4
"""Reads of stored files, bundle writes and their final fsync: disk-bound, few at a time."""


class LocalStorage(Storage):
    name = "local"

    def __init__(self, root: str | Path, *, secret: str, public_base_url: str = "") -> None:
        self.root = Path(root).resolve()
        self._secret = secret
        self._base = public_base_url.rstrip("/")
        self._threads = BlockingCalls(IO_THREADS, "local-store")

    async def start(self) -> None:
        for sub in ("downloads", "exports"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._threads.start()

    async def stop(self) -> None:
        self._threads.stop()

    def path_of(self, key: str) -> Path:
        if not is_valid_key(key):
            raise StorageError(f"invalid object key {key!r}")
        return self.root / key

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)
        try:
            return ObjectInfo(key=key, size=path.stat().st_size)
        except FileNotFoundError:
            file_id = _demo_id(key)
            if file_id is not None and demo.is_available(file_id):
                return ObjectInfo(key=key, size=demo.size_of(file_id))
            return None

    async def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        if path.exists():
            with path.open("rb") as fh:
                while chunk := await self._threads.run(fh.read, chunk_size):
                    yield chunk
            return
        file_id = _demo_id(key)
        if file_id is None or not demo.is_available(file_id):
            raise ObjectMissing(f"no object at {key}")
        for chunk in demo.chunks(file_id, chunk_size):
            yield chunk

    async def writer(self, key: str) -> ObjectWriter:
        path = self.path_of(key)
        part = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
        return _LocalWriter(path, part, self._threads)

    async def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    async def presign(self, key: str, expires_in_s: int) -> PresignedUrl:
        self.path_of(key)
        path = FILES_ROUTE + key
        expires = int(time.time()) + expires_in_s
        sig = signing.signature(self._secret, path, expires)
        return PresignedUrl(
            url=f"{self._base}{path}?expires={expires}&signature={sig}", expires_at=expires
        )

    def verify(self, key: str, expires: str, sig: str) -> Path:
        """Where a signed link's object would be on disk; raise Forbidden unless it is valid.

        The path may not exist: demo sources are generated, not stored."""
        signing.verify(self._secret, FILES_ROUTE + key, expires, sig, time.time())
        return self.path_of(key)

    async def check(self) -> bool:
        return os.access(self.root, os.W_OK) and (self.root / "exports").is_dir()


WRITE_BUFFER_BYTES = 256 * 1024
"""A bundle's bytes are handed to a thread at least this many at a time: a paced job writes
a few KiB per progress step, and each trip to the thread pool costs the event loop more
than the write itself."""


class _LocalWriter(ObjectWriter):
    def __init__(self, final: Path, part: Path, threads: BlockingCalls) -> None:
        self._final, self._part, self._threads = final, part, threads
        self._fh: BinaryIO | None = part.open("wb")
        self._buffer = bytearray()
        self._size = 0

    async def write(self, data: bytes) -> None:
        if self._fh is None:
            raise StorageError("write after complete/abort")
        self._buffer += data
        self._size += len(data)
        if len(self._buffer) >= WRITE_BUFFER_BYTES:
            full, self._buffer = self._buffer, bytearray()
            await self._threads.run(self._fh.write, full)

    async def complete(self) -> int:
        if self._fh is None:
            raise StorageError("complete after complete/abort")
        fh, self._fh = self._fh, None
        tail, self._buffer = self._buffer, bytearray()
        await self._threads.run(_close_and_rename, fh, tail, self._part, self._final)
        return self._size

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._part.unlink(missing_ok=True)


def _close_and_rename(fh: BinaryIO, tail: bytes | bytearray, part: Path, final: Path) -> None:
    fh.write(tail)
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    part.replace(final)


def _demo_id(key: str) -> int | None:
    prefix, _, name = key.partition("/")
    stem = name.removesuffix(".zip")
    if prefix != "downloads" or not stem.isdigit():
        return None
    return int(stem)

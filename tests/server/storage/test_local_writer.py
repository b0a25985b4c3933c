"""The local store's bundle writer: bytes are buffered before they go to disk, and nothing is
visible under the key until ``complete``."""

from __future__ import annotations

import uuid
from pathlib import Path

from delineate.storage.base import ObjectWriter
from delineate.storage.keys import bundle_key
from delineate.storage.local import WRITE_BUFFER_BYTES, LocalStorage


async def local_store(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path, secret="test")
    await store.start()
    return store


def chunks() -> list[bytes]:
    """Small and large chunks, more than two buffers' worth in all."""
    sizes = [5, 4096, WRITE_BUFFER_BYTES - 1, 3, WRITE_BUFFER_BYTES + 7, 12_345]
    return [bytes([i % 251]) * size for i, size in enumerate(sizes)]


async def written(store: LocalStorage, key: str) -> ObjectWriter:
    """A writer of ``key`` that has been given every chunk, not yet completed."""
    writer = await store.writer(key)
    for chunk in chunks():
        await writer.write(chunk)
    return writer


async def test_every_byte_lands_in_order_and_only_at_complete(tmp_path: Path) -> None:
    store = await local_store(tmp_path)
    key = bundle_key(str(uuid.uuid4()))
    writer = await written(store, key)
    assert await store.head(key) is None
    assert await writer.complete() == sum(map(len, chunks()))
    assert store.path_of(key).read_bytes() == b"".join(chunks())
    assert not list(store.path_of(key).parent.glob("*.part"))


async def test_abort_leaves_nothing_behind(tmp_path: Path) -> None:
    store = await local_store(tmp_path)
    key = bundle_key(str(uuid.uuid4()))
    writer = await written(store, key)
    await writer.abort()
    await writer.abort()  # idempotent
    assert await store.head(key) is None
    assert not list(store.path_of(key).parent.iterdir())

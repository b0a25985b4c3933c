"""Deterministic demo source files: the original's ``id % 7 == 0`` rule, with real bytes.

The embedded store needs no pre-created files: a file's size and content are pure
functions of its id, so every replica, test and benchmark agrees on them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

_BLOCK = 64 * 1024
MIN_SIZE = 16 * 1024
SPREAD = 1536 * 1024


def is_available(file_id: int) -> bool:
    return file_id % 7 == 0


def size_of(file_id: int) -> int:
    digest = hashlib.blake2b(str(file_id).encode(), digest_size=8).digest()
    return MIN_SIZE + int.from_bytes(digest, "big") % SPREAD


@functools.lru_cache(maxsize=64)
def _block(file_id: int) -> bytes:
    seed = str(file_id).encode()
    parts = (hashlib.blake2b(seed + i.to_bytes(4, "big")).digest() for i in range(_BLOCK // 64))
    return b"".join(parts)


def read_range(file_id: int, start: int, end: int) -> bytes:
    """Bytes [start, end) of the file's content (the content is endless; callers clamp)."""
    block = _block(file_id)
    out = bytearray()
    pos = start
    while pos < end:
        offset = pos % _BLOCK
        take = min(_BLOCK - offset, end - pos)
        out += block[offset : offset + take]
        pos += take
    return bytes(out)


def chunks(file_id: int, chunk_size: int, size: int | None = None) -> Iterator[bytes]:
    """The file's content in chunks; ``size`` overrides its standard size (seeding)."""
    size = size_of(file_id) if size is None else size
    for start in range(0, size, chunk_size):
        yield read_range(file_id, start, min(start + chunk_size, size))


def content(file_id: int, size: int | None = None) -> bytes:
    return read_range(file_id, 0, size_of(file_id) if size is None else size)


def spread_size(index: int, max_bytes: int) -> int:
    """Seeded demo sizes: 4 KiB doubling with the index, up to ``max_bytes``, then again."""
    return min(max_bytes, 4096 << (index % 14))

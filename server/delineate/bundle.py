"""Streaming zip writer: turns file chunks into zip bytes without holding a file in memory.

``zipfile`` is synchronous and wants a file object; we give it a sink that only collects
bytes, and the caller drains the sink after every write and forwards the bytes to storage.
Entries are STORED (the sources are zips already); zip64 is used when an entry needs it.
"""

from __future__ import annotations

import time
import zipfile
from types import TracebackType
from typing import IO

ZIP64_LIMIT = zipfile.ZIP64_LIMIT


class _Sink:
    """A write-only, non-seekable file object; zipfile then writes data descriptors."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        raise OSError("not seekable")

    def seekable(self) -> bool:
        return False


class ZipBundle:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, mode="w", compression=zipfile.ZIP_STORED)  # type: ignore[call-overload]

    def entry(self, name: str, size: int) -> IO[bytes]:
        info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
        info.file_size = size
        info.compress_type = zipfile.ZIP_STORED
        entry: IO[bytes] = self._zip.open(info, mode="w", force_zip64=size >= ZIP64_LIMIT)
        return entry

    def drain(self) -> bytes:
        """Bytes produced since the last drain."""
        data = bytes(self._sink.buffer)
        self._sink.buffer.clear()
        return data

    def close(self) -> bytes:
        """Write the central directory; return the final bytes."""
        self._zip.close()
        return self.drain()

    def __enter__(self) -> ZipBundle:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self._zip.fp = None  # abandon: do not write a central directory for a failed bundle

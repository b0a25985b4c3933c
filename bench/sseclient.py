"""A minimal Server-Sent Events client for the load test: an asyncio Protocol, one callback per
event's data.

The SSE counterpart of ``wsclient``: thousands of streams in one process through httpx would
cost the load client more CPU per event than the server spends, and its queueing would show up
as server latency. This client sends one GET, reads the status line, undoes chunked transfer
coding and hands the ``data`` of each event to a callback. It is bench code, not a general
client (no redirects, no retry, one stream per connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rawclient import open_get

OnEvent = Callable[["SseConnection", bytes], None]
GUARD = 16 * 1024 * 1024  # a chunk larger than this is a protocol error here


class SseConnection(asyncio.Protocol):
    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._raw = bytearray()  # bytes off the socket, before chunked decoding
        self._body = bytearray()  # the event stream, after it
        self._headers_done = False
        self._chunked = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._raw += data
        if not self._headers_done:
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._raw[:end]).lower()
            del self._raw[: end + 4]
            if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
                self._fail(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self._chunked = b"transfer-encoding: chunked" in head
            self._headers_done = True
            if not self.opened.done():  # not given up on (open_get's timeout)
                self.opened.set_result(None)
        if self._chunked:
            self._dechunk()
        else:
            self._body += self._raw
            self._raw.clear()
        self._events()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the response"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- parsing ---------------------------------------------------------------------------

    def _dechunk(self) -> None:
        raw = self._raw
        while True:
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(raw[:line_end]).split(b";", 1)[0], 16)
            if size > GUARD:
                self._fail(ConnectionError("chunk too large"))
                return
            if size == 0:  # the last chunk: the stream is over
                raw.clear()
                self.close()
                return
            if len(raw) < line_end + 2 + size + 2:
                return
            self._body += raw[line_end + 2 : line_end + 2 + size]
            del raw[: line_end + 2 + size + 2]

    def _events(self) -> None:
        body = self._body
        while True:
            end = body.find(b"\n\n")
            if end < 0:
                return
            block = bytes(body[:end])
            del body[: end + 2]
            data = [
                line[5:].removeprefix(b" ")
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:  # comments (keep-alives) and id-only blocks carry none
                self.on_event(self, b"\n".join(data))

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # --- API -----------------------------------------------------------------------------

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def aclose(self) -> None:
        self.close()  # an event stream has no closing handshake


async def open_sse(
    url: str, on_event: OnEvent, headers: dict[str, str] | None = None, timeout_s: float = 30
) -> SseConnection:
    """Connect, send the GET and wait for the response head."""
    headers = {"Accept": "text/event-stream", **(headers or {})}
    return await open_get(url, lambda: SseConnection(on_event), headers, timeout_s)

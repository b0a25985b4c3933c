"""The connect-and-GET step that the load test's minimal WebSocket and SSE clients share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

P = TypeVar("P", bound=asyncio.Protocol)


async def open_get(
    url: str, make_protocol: Callable[[], P], headers: dict[str, str], timeout_s: float
) -> P:
    """Connect to ``url``'s host, send ``GET`` with ``headers`` and wait until the protocol's
    ``opened`` future says the response head arrived (or failed)."""
    parts = urlparse(url)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, conn = await loop.create_connection(make_protocol, parts.hostname, parts.port)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n{head}\r\n"
    state: Any = conn  # both clients keep their transport and an ``opened`` future
    state.transport.write(request.encode())
    try:
        async with asyncio.timeout(timeout_s):
            await state.opened
    except BaseException:
        # A handshake given up on is a socket the server may still answer: close it, or
        # it lingers there as a subscriber nobody reads.
        state.transport.close()
        raise
    return conn


class HttpConnection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection, one request at a time, for responses that carry a
    Content-Length (the API's JSON answers). The initiate load runs hundreds of requests a
    second from one process: httpx spent about 2 ms of the client's CPU on each, which showed
    up as server latency (3.3 ms p50 against an idle replica whose own histogram said 1.2)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._response: asyncio.Future[tuple[int, bytes]] | None = None
        self.usable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._response is None:
            return
        head = bytes(self._buffer[:end]).split(b"\r\n")
        status = head[0].split(b" ")
        if len(status) < 2 or not status[1].isdigit():
            self._response.set_exception(ConnectionError(f"not an HTTP response: {head[0]!r}"))
            self._response = None
            self.usable = False
            return
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get(b"content-length", b"0"))
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        if fields.get(b"connection", b"").lower() == b"close":
            self.usable = False
        response, self._response = self._response, None
        if not response.done():
            response.set_result((int(status[1]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self._response is not None and not self._response.done():
            self._response.set_exception(exc or ConnectionError("connection closed"))

    async def request(
        self, method: str, url: str, body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        """Send one request and wait for its (status, body)."""
        parts = urlparse(url)
        if self.transport is None or self.transport.is_closing() or not self.usable:
            raise ConnectionError("connection closed")
        self._response = asyncio.get_running_loop().create_future()
        self.transport.write(
            f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return await self._response


class HttpPool:
    """Kept-alive ``HttpConnection``s per host, opened as needed, reused once answered."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[HttpConnection]] = {}

    async def post_json(self, url: str, body: bytes) -> tuple[int, bytes]:
        parts = urlparse(url)
        host = (parts.hostname or "127.0.0.1", parts.port or 80)
        idle = self._idle.setdefault(host, [])
        conn = None
        while idle and conn is None:
            conn = idle.pop()
            if not conn.usable:  # the server closed it while it sat idle
                conn = None
        if conn is None:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(HttpConnection, *host)
        status, answer = await conn.request("POST", url, body, "application/json")
        if conn.usable:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return status, answer

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()

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
    async with asyncio.timeout(timeout_s):
        await state.opened
    return conn

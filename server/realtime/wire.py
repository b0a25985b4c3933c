"""Frames on the wire: each message framed once, the same bytes written to every socket.

Both transports' framings live here: the WebSocket text frame and the SSE event, each built
once per message (``Outgoing.ws_frame``, ``Outgoing.sse_event``) whatever the number of
sockets it goes to.

Through ASGI, every frame sent to every socket is a dict, a coroutine, a ``websockets``
``Frame`` object serialized into a fresh header and payload, and a join: the same work
thousands of times for one job frame. A server-to-client WebSocket text frame is the same
bytes for every client (unmasked; no compression, since permessage-deflate is off), so
``Outgoing.ws_frame`` builds it once and ``DirectSocket`` writes it straight to the
connection's transport.

This is the one module that reaches below ASGI, into uvicorn's sans-I/O WebSocket protocol
(the object behind the ASGI ``send`` callable). It does so only for data frames and only
while the connection is plainly open, writable and uncompressed; everything else (accept,
close, pings, a paused transport, another server) goes through ASGI as before.
``tests/server/realtime/test_wire.py`` pins the parts of uvicorn it relies on, so an upgrade
that moves them fails a test instead of silently falling back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from websockets.protocol import State

TEXT_FIN = 0x81  # FIN + opcode 1 (text)
_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack

UVICORN_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame of UTF-8 ``payload`` (server to client)."""
    length = len(payload)
    if length < 126:
        return _SHORT(TEXT_FIN, length) + payload
    if length < 65536:
        return _MEDIUM(TEXT_FIN, 126, length) + payload
    return _LONG(TEXT_FIN, 127, length) + payload


def format_sse_event(data: str, *, event: str | None = None, id: int | None = None) -> bytes:
    """One SSE event. ``data`` may hold newlines; each line becomes its own ``data:`` field."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


class DirectSocket:
    """Writes ready-made frames to one uvicorn WebSocket connection's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` now if the connection is open and writable; False: use ASGI."""
        protocol = self._protocol
        if (
            protocol.conn.state is not State.OPEN
            or not protocol.writable.is_set()
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(frame)
        return True


def direct_socket(send: Callable[..., Any] | None) -> DirectSocket | None:
    """A ``DirectSocket`` for the connection behind uvicorn's ASGI ``send``, or None when the
    server is not uvicorn's sans-I/O implementation or the connection compresses frames."""
    protocol = getattr(send, "__self__", None)
    if protocol is None or type(protocol).__module__ != UVICORN_SANSIO:
        return None
    conn = getattr(protocol, "conn", None)
    if conn is None or conn.extensions or not hasattr(protocol, "writable"):
        return None
    return DirectSocket(protocol)

"""Frames on the wire: each message framed once, the same bytes written to every socket.

Both transports' framings live here, pure: the WebSocket text frame and the SSE event (as a
chunk of a chunked HTTP body), each built once per message (``Outgoing.ws_frame``,
``Outgoing.sse_chunk``) whatever the number of sockets it goes to. Writing them below ASGI
is ``delineate.uvicorn_ext.sockets``'s.
"""

from __future__ import annotations

import struct

TEXT_FIN = 0x81  # FIN + opcode 1 (text)
_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame of UTF-8 ``payload`` (server to client)."""
    length = len(payload)
    if length < 126:
        return _SHORT(TEXT_FIN, length) + payload
    if length < 65536:
        return _MEDIUM(TEXT_FIN, 126, length) + payload
    return _LONG(TEXT_FIN, 127, length) + payload


def body_chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body (RFC 9112, section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def format_sse_event(data: str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """One SSE event. ``data`` may hold newlines; each line becomes its own ``data:`` field."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()

"""Frames on the wire: each message framed once, the same bytes written to every socket.

Both transports' framings live here: the WebSocket text frame and the SSE event (as a
chunk of a chunked HTTP body), each built once per message (``Outgoing.ws_frame``,
``Outgoing.sse_chunk``) whatever the number of sockets it goes to.

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

An SSE stream is an HTTP response whose body never ends; each event went through the ASGI
send of every middleware (five wrappers that look only at the response start) and a task
switch into the stream's writer. ``DirectStream`` writes the event, framed as a body chunk,
to the transport of uvicorn's httptools response cycle while the response is streaming,
writable and chunked; the start, the end, a paused transport and other servers go through
ASGI.

It also holds ``LeanWebSocketProtocol``, the uvicorn protocol the server runs: uvicorn's
own, keeping less per connection (thousands sit idle at once).
``tests/server/realtime/test_wire.py`` pins the parts of uvicorn both rely on, so an upgrade
that moves them fails a test instead of silently falling back.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

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
        if not _writable(protocol):
            return False
        protocol.transport.write(frame)
        return True

    def close(self, code: int, reason: str) -> bool:
        """Send the close frame and do what uvicorn does for an ASGI ``websocket.close``:
        the app's next ``receive`` is the disconnect; the connection ends when the client
        answers, or after the close timeout. False: the connection was closing or closed
        already (the client went first), and nothing was done.

        Used by a paced close (``server.realtime.closing``): no task is woken per socket to
        send it. A transport paused for a slow reader still takes the close frame's few
        bytes, as ASGI's close would."""
        protocol = self._protocol
        if (
            protocol.conn.state is not State.OPEN
            or protocol.close_sent
            or protocol.transport.is_closing()
        ):
            return False
        protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        protocol.conn.send_close(code, reason)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()
        protocol.close_timer = protocol.loop.call_later(
            protocol.close_timeout, protocol.transport.close
        )
        return True


def _writable(protocol: Any) -> bool:
    return (
        protocol.conn.state is State.OPEN
        and protocol.writable.is_set()
        and not protocol.close_sent
        and not protocol.transport.is_closing()
    )


def direct_socket(send: Callable[..., Any] | None) -> DirectSocket | None:
    """A ``DirectSocket`` for the connection behind uvicorn's ASGI ``send``, or None when the
    server is not uvicorn's sans-I/O implementation or the connection compresses frames."""
    protocol = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    conn = getattr(protocol, "conn", None)
    if conn is None or conn.extensions or not hasattr(protocol, "writable"):
        return None
    return DirectSocket(protocol)


class DirectStream:
    """Writes ready-made body chunks to one streaming uvicorn (httptools) HTTP response."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    def write(self, chunk: bytes) -> bool:
        """Write ``chunk`` now if the response is streaming, chunked and writable; False:
        use ASGI (which waits for a paused transport, or ends the response)."""
        cycle = self._cycle
        if (
            not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or not cycle.chunked_encoding
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        ):
            return False
        cycle.transport.write(chunk)
        return True


def direct_stream(send: Callable[..., Any] | None) -> DirectStream | None:
    """A ``DirectStream`` for the response behind uvicorn's ASGI ``send``, or None when the
    server is not uvicorn's httptools implementation."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return None
    return DirectStream(cycle)


T = TypeVar("T")


class Inbox(Generic[T]):
    """What uvicorn needs of its per-connection ``asyncio.Queue`` (``put_nowait``, ``get``,
    ``empty``), unbounded, in a list: an ``asyncio.Queue`` is three deques (about 2.4 KiB)
    per connection, whose receive queue holds one message at a time almost always."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._waiters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._wake_next()

    async def get(self) -> T:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and self._items:
                    self._wake_next()  # woken, then cancelled: pass the wake-up on
                raise
            finally:
                self._waiters.remove(waiter)
        return self._items.pop(0)

    def _wake_next(self) -> None:
        """Wake one waiting reader (one message, one reader), as asyncio.Queue does."""
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)
                return


class Flag:
    """What uvicorn needs of its ``writable`` ``asyncio.Event`` (``is_set``, ``set``,
    ``clear``, ``wait``), with no waiter deque until someone waits: the transport is
    writable nearly always, and an Event is about 1.5 KiB per connection."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return await waiter


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, minus what it keeps per connection for no use:
    its receive queue and writable event become ``Inbox`` and ``Flag``, and the parsed
    handshake request and response (two ``Headers``, about 4 KiB) are dropped once the
    handshake is done."""

    # Every attribute uvicorn's protocol sets, as slots: it sets 37, past the 30 that CPython
    # keeps in a shared-key instance dict, so each connection carried its own dict of
    # them (about 1.6 KiB); slots take 8 bytes each. An attribute a later uvicorn adds
    # still works: it lands in the instance dict the base class keeps.
    __slots__ = (
        "app", "app_state", "asgi_version", "client", "close_sent", "close_timeout",
        "close_timer", "config", "conn", "connections", "curr_msg_data_type",
        "default_headers", "disconnected", "frames", "handshake_complete",
        "handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop",
        "pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout", "ping_timer",
        "pong_timer", "queue", "read_paused", "request", "response", "root_path", "scheme",
        "scope", "server", "tasks", "transport", "writable",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # uvicorn calls this right after it wrote the handshake response: the request and
        # response are never read again. The request's headers are emptied rather than just
        # dropped, since the websockets parser's suspended frame still holds the request.
        self.request.headers.clear()
        self.request = self.response = None  # type: ignore[assignment]
        super().start_keepalive()

"""Writing to uvicorn's connections below ASGI, and the WebSocket protocol the server runs.

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
own, keeping less per connection (thousands sit idle at once), on top of
``ClosingWebSocketProtocol``, whose closes end by a deadline (see "Closing within a
deadline" below; ``DirectStream.end`` does the same for an event stream).

Written against the uvicorn versions ``delineate.versions`` names, with websockets 17.
``tests/server/realtime/test_wire.py`` pins the parts of uvicorn all of these rely on, and
the version range, so an upgrade that moves them fails a test instead of silently falling
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys
import termios
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Self, TypeVar

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from delineate.wire import body_chunk

"""The uvicorn versions (major, minor; from inclusive, to exclusive) this module was written
against: ``test_wire`` fails outside them."""


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

    def hold_reading(self) -> None:
        """Leave what the client sends unread until this connection's close (``send_close``
        reads again). After a terminal frame a client that closes first would otherwise
        have its close handled at once: thousands of them when many jobs end together,
        ahead of other jobs' last frames. Held, each is answered on its paced turn."""
        protocol = self._protocol
        if not protocol.read_paused and not protocol.transport.is_closing():
            protocol.read_paused = True
            protocol.transport.pause_reading()

    def close(self, code: int, reason: str) -> bool:
        """Send the close frame and do what uvicorn does for an ASGI ``websocket.close``:
        the app's next ``receive`` is the disconnect; the connection ends when the client
        answers, or at the close deadline (``ClosingWebSocketProtocol``: aborted). False:
        the connection was closing or closed already (the client went first), and nothing
        was done.

        Used by a paced close (``delineate.realtime.closing``): no task is woken per socket to
        send it. A transport paused for a slow reader still takes the close frame's few
        bytes (ASGI's close would wait for it to drain, forever for a stalled client)."""
        return send_close(self._protocol, code, reason)


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

    async def end(self, deadline_s: float) -> bool:
        """End the response, whatever the client reads: the last chunk now (a paused
        transport still takes its five bytes); once the client's kernel has taken
        everything, the response is complete for uvicorn, as after its own last ``send``
        (the connection stays for another request); if that has not happened by
        ``deadline_s``, the connection is reset (``abort_transport``). False: the response
        or the connection had ended already, nothing was done.

        Waiting for the client before completing keeps the connection ours until then: a
        keep-alive timeout or a drain's shutdown would close it, and the kernel would keep
        what the client never read."""
        cycle = self._cycle
        transport = cycle.transport
        if cycle.disconnected or cycle.response_complete or transport.is_closing():
            return False
        if cycle.response_started and cycle.chunked_encoding:
            transport.write(body_chunk(b""))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline_s
        while not delivered(transport) and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(DELIVERY_POLL_S)  # (the kernel offers no event for it)
        cycle.response_complete = True
        cycle.message_event.set()  # a pending receive() says http.disconnect, as uvicorn does
        if not delivered(transport):
            abort_transport(transport)
            return True
        if not cycle.keep_alive:  # a drain's shutdown asked for it
            transport.close()
        cycle.on_response()
        return True


def direct_stream(send: Callable[..., Any] | None) -> DirectStream | None:
    """A ``DirectStream`` for the response behind uvicorn's ASGI ``send``, or None when the
    server is not uvicorn's httptools implementation."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return None
    return DirectStream(cycle)


# --- Closing within a deadline ------------------------------------------------------------
#
# asyncio's ``transport.close()`` first sends everything buffered, so the connection of a
# client that stopped reading stays ESTABLISHED, its buffers pinned, for as long as the
# client likes; once the buffer is in the kernel, the kernel keeps the socket (FIN_WAIT1)
# and what the client never read for minutes more. So every close of a real-time
# connection has a deadline: the client reads the close (or the end of the stream) and
# answers, or the connection is reset then, freeing its buffers at once.

CLOSE_DEADLINE_S = 5.0
"""The default deadline (the server's is ``Settings.close_deadline_s``)."""

_LINGER_RESET = struct.pack("ii", 1, 0)


def abort_transport(transport: asyncio.Transport) -> None:
    """Drop the connection now: SO_LINGER 0 makes the kernel reset it and free its send
    queue (a plain close would keep them); the transport drops its buffer and calls
    ``connection_lost``. Nothing happens to a connection that is gone already."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # the socket may be closed already
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


DELIVERY_POLL_S = 0.05
"""How often an ending event stream checks whether its client has taken everything."""

_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ, for a socket


def delivered(transport: asyncio.Transport) -> bool:
    """Everything written has reached the client's kernel: nothing in the transport's
    buffer, nothing unacknowledged in the socket's send queue (SIOCOUTQ), or the
    connection is gone. Without SIOCOUTQ (not Linux), the transport's buffer alone."""
    if transport.get_write_buffer_size():
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return True
    try:
        queued = fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4))
    except (OSError, ValueError):  # closed meanwhile
        return True
    return int.from_bytes(queued, sys.byteorder) == 0


def send_close(protocol: Any, code: int, reason: str) -> bool:
    """Close uvicorn's sans-I/O WebSocket connection as an ASGI ``websocket.close`` would,
    without waiting for a paused transport: the app's next ``receive`` is the disconnect;
    the close frame is written now; the connection ends when the client answers, or when
    ``close_timeout`` runs out (a ``ClosingWebSocketProtocol`` is aborted then; uvicorn's
    own protocol is closed, which waits for the client). False: closing or closed already."""
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
    if protocol.read_paused:  # the client's answer has to be read
        protocol.read_paused = False
        protocol.transport.resume_reading()
    expired = (
        protocol.abort
        if isinstance(protocol, ClosingWebSocketProtocol)
        else protocol.transport.close
    )
    protocol.close_timer = protocol.loop.call_later(protocol.close_timeout, expired)
    return True


def closing_socket(send: Callable[..., Any] | None) -> ClosingWebSocketProtocol | None:
    """The connection behind uvicorn's ASGI ``send`` when its closes are ours to bound."""
    protocol = getattr(send, "__self__", None)
    return protocol if isinstance(protocol, ClosingWebSocketProtocol) else None


class ClosingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol whose every close ends by ``close_deadline_s``.

    A close the server starts (``send_close``: the app's, a drain's 1012, a failed
    keepalive's 1011) waits that long for the client's answer, then aborts; a close that
    uvicorn makes with ``transport.close()`` (the client's close answered, the app
    returned) is aborted if the transport still holds data then. ``closed()`` waits for
    the end, for what the connection holds (the per-address slot, the gauge) to be freed
    with it."""

    __slots__ = ("abort_timer", "gone")

    close_deadline_s: ClassVar[float] = CLOSE_DEADLINE_S

    @classmethod
    def closing_within(cls, deadline_s: float) -> type[Self]:
        """This protocol with another deadline (uvicorn builds protocols from a class)."""
        attributes = {"__slots__": (), "close_deadline_s": deadline_s}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = self.close_deadline_s
        self.abort_timer: asyncio.TimerHandle | None = None
        self.gone: asyncio.Future[None] | None = None

    def abort(self) -> None:
        """The deadline passed: reset the connection (``abort_transport``); its
        ``connection_lost`` cancels the timers."""
        if not self.disconnected:
            abort_transport(self.transport)

    def start_close(self, code: int, reason: str) -> bool:
        """``send_close`` on this connection."""
        return send_close(self, code, reason)

    async def closed(self) -> None:
        """Until the connection is gone, when a close is under way (else at once: uvicorn
        closes the connection after the app returns); aborted at the deadline from now if
        the client has not finished by then."""
        if self.disconnected or not (self.close_sent or self.transport.is_closing()):
            return
        self._abort_at_deadline()
        if self.gone is None or self.gone.cancelled():  # (a waiter before was cancelled)
            self.gone = self.loop.create_future()
        await self.gone

    def _abort_at_deadline(self) -> None:
        if self.abort_timer is None and not self.disconnected:
            self.abort_timer = self.loop.call_later(self.close_deadline_s, self.abort)

    def _bound_close(self) -> None:
        """After uvicorn's ``transport.close()``: a stalled client would hold it forever."""
        if self.transport.is_closing():
            self._abort_at_deadline()

    # uvicorn's hooks, each bounded. Its own versions close at once (1012 on shutdown, 1011
    # on a keepalive timeout) with ``transport.close()``, which waits for the client.

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)

    def shutdown(self) -> None:
        if self.handshake_complete and self.initial_response is None:
            self.stop_keepalive()
            if self.start_close(1012, ""):
                return
        super().shutdown()
        self._bound_close()

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        self.start_close(1011, "keepalive ping timeout")

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        self._bound_close()

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        # The app returned (its task's done callback; overriding run_asgi would keep one
        # more coroutine frame per open socket): uvicorn may just have closed the transport.
        super().on_task_complete(task)
        self._bound_close()


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


class LeanWebSocketProtocol(ClosingWebSocketProtocol):
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

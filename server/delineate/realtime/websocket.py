"""WebSocket endpoints: the first-choice transport.

``/v1/download/subscribe/{job_id}`` follows one job: snapshot (or the frames after
``?since=``), every frame, then close 1000 after the terminal frame (the frame at once, the
close on its turn: ``delineate.realtime.closing``).

``/v1/ws`` follows many jobs over one socket. Client ops are JSON text::

    {"op": "subscribe", "jobId": "...", "since": "<epoch>:12"}  -> ack, then the job's frames
    {"op": "unsubscribe", "jobId": "..."}              -> ack
    {"op": "ping"}                                     -> pong

A bad op gets an ``error`` message naming the problem, and the socket stays open.

Close codes: 1000 done; 1008 malformed request; 1009 message too big (uvicorn);
1011 server error; 1013 slow consumer (the outbox overflowed: reconnect with ``since``) or
too many sockets from one address; 4404 unknown job (after an ``error`` message saying so).
A handshake from an Origin outside CORS_ORIGINS is refused with HTTP 403.

Every close waits at most CLOSE_DEADLINE_S for the client to read it and answer; then the
connection is reset (``wire.ClosingWebSocketProtocol``). The connection's per-address slot
and gauge are released when it is gone, not before (docs/operations.md, "Slow consumers").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING

import msgspec
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from delineate import jsondepth
from delineate.errors import DelineateError, RateLimited
from delineate.http.auth import principal_of
from delineate.http.edge import RAW_SEND_KEY
from delineate.http.params import job_id_param, services_of
from delineate.realtime.admission import origin_allowed
from delineate.realtime.closing import ClosePacer
from delineate.realtime.hub import Watch
from delineate.realtime.outbox import CONTROL_SEQ, Outbox, Outgoing, outbox_for
from delineate.realtime.resume import parse_since as parse_position
from delineate.realtime.session import Session
from delineate.realtime.sse import parse_since
from delineate.uvicorn_ext.sockets import closing_socket, direct_socket
from delineate_protocol.codes import CloseCode
from delineate_protocol.frames import (
    AckMessage,
    Control,
    ErrorMessage,
    PingOp,
    PongMessage,
    SubscribeOp,
    UnsubscribeOp,
    encoder,
    op_decoder,
)

if TYPE_CHECKING:  # the services build the routes that import this module
    from delineate.services import Services

log = logging.getLogger("delineate.ws")

CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_POLICY = CloseCode.POLICY
CLOSE_SLOW_CONSUMER = CloseCode.TRY_AGAIN_LATER
CLOSE_IDLE = CloseCode.IDLE
JOB_FINISHED = "job finished"
SLOW_CONSUMER_REASON = "slow consumer: reconnect with since=<last position>"


def control(message: Control, job_id: str = "") -> Outgoing:
    tag = str(message.__struct_config__.tag)
    return Outgoing(job_id, CONTROL_SEQ, tag, encoder.encode(message).decode())


def error_item(code: str, message: str, job_id: str | None = None) -> Outgoing:
    return control(ErrorMessage(code=code, message=message, job_id=job_id), job_id or "")


async def _close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Start the close: the close frame goes out now even to a client that stopped reading,
    and the connection ends when the client answers or at CLOSE_DEADLINE_S (``_serve``
    waits for that). Through ASGI (another server) the close frame waits for a paused
    transport, up to the deadline."""
    reason = reason[:120]
    protocol = closing_socket(ws.scope.get(RAW_SEND_KEY))
    if protocol is not None:
        protocol.start_close(code, reason)
        return
    deadline_s = services_of(ws).settings.close_deadline_s
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError, TimeoutError):
        await asyncio.wait_for(ws.close(code, reason), deadline_s)


async def _closed(ws: WebSocket) -> None:
    """Until the connection is gone, once a close is under way: the client finished, or the
    deadline passed and the connection was reset (``wire.ClosingWebSocketProtocol``)."""
    protocol = closing_socket(ws.scope.get(RAW_SEND_KEY))
    if protocol is not None:
        await protocol.closed()


async def admit(ws: WebSocket, services: Services) -> str | None:
    """Accept the socket if its Origin and its address's connection count allow it; return
    the address held (``connections.release`` it), or None when refused.

    A foreign Origin is refused before the handshake completes (HTTP 403); an address over
    its cap gets an error message and close 1013 (try again later)."""
    if not origin_allowed(ws, services.settings):
        await ws.close(CLOSE_POLICY)
        return None
    try:
        address = services.connections.acquire(ws)
    except RateLimited as exc:
        await ws.accept()
        await ws.send_text(error_item(exc.code, exc.message).text)
        await _close(ws, CLOSE_SLOW_CONSUMER, exc.message)
        return None
    try:
        await ws.accept()
    except BaseException:
        services.connections.release(address)
        raise
    return address


Handler = Callable[[WebSocket, "Services", Outbox, Session], Coroutine[None, None, None]]


class WebSocketEndpoint:
    """One WebSocket route as a plain ASGI app. Starlette runs a class instance as it is,
    without the two wrappers (and their frames, kept for the connection's life) it puts
    around a function endpoint to apply exception handlers, which these handlers do not
    need: they answer their own errors with an error message and a close code."""

    __slots__ = ("__name__", "_handler")

    def __init__(self, handler: Handler, name: str) -> None:
        self._handler, self.__name__ = handler, name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _serve(WebSocket(scope, receive, send), self._handler)


async def _serve(ws: WebSocket, handler: Handler) -> None:
    """Admission, then the connection's outbox and session around ``handler``. Straight-line
    code on purpose: thousands of these are suspended at once, and every generator-based
    context manager held across the connection's life costs memory per socket."""
    services = services_of(ws)
    address = await admit(ws, services)
    if address is None:
        return
    # Everything that reads the handshake's headers (origin, address, credentials, trace
    # context, request id) has read them; the scope would keep them for the socket's life.
    ws.scope["headers"] = []
    outbox = outbox_for(services.settings)
    session = Session(services.metrics, "websocket", outbox)
    session.start()
    try:
        await handler(ws, services, outbox, session)
        # The slot and the gauge go with the connection itself, not before it.
        await _closed(ws)
    finally:
        session.finish()
        outbox.detach()
        services.connections.release(address)


class FrameWriter:
    """How one connection's messages reach its client, counted on its session.

    A message goes out as its ready-made frame bytes written straight to the transport
    (``wire.DirectSocket``) when the connection allows, else through the server's own ASGI
    ``send`` (kept by ``EdgeHeaders``), skipping Starlette's per-message wrappers either way:
    this runs once per frame per socket. Accept and close still go through Starlette, which
    tracks the connection's state, except the paced close after a terminal frame."""

    __slots__ = ("_asgi_send", "_closes", "_session", "_socket")

    def __init__(self, ws: WebSocket, session: Session, *, closes: ClosePacer | None) -> None:
        """``closes``: the socket closes after its terminal frame, on its turn there."""
        send = ws.scope.get(RAW_SEND_KEY)
        self._socket = direct_socket(send)
        self._asgi_send: Callable[[Message], Awaitable[None]] = send or ws.send
        self._session = session
        self._closes = closes

    def now(self, items: Sequence[Outgoing]) -> bool:
        """``Outbox.direct``: write messages at once (frames published together, in one
        write), without waking the writer task. A terminal frame goes out here only on a
        socket that closes after it, and its close is queued on the pacer; elsewhere the
        writer sends it and then unwatches the job."""
        socket = self._socket
        last = items[-1]  # a terminal frame is always a job's last
        if socket is None or (last.terminal and self._closes is None):
            return False
        data = last.ws_frame if len(items) == 1 else b"".join(item.ws_frame for item in items)
        if not socket.write(data):
            return False
        for item in items:
            self._session.sent(item)
        if last.terminal:
            assert self._closes is not None
            socket.hold_reading()
            self._closes.schedule(lambda: socket.close(CLOSE_NORMAL, JOB_FINISHED))
        return True

    async def close_turn(self) -> None:
        """Wait for this socket's turn to close after its terminal frame (what the client
        sends meanwhile, its own close included, is read then)."""
        assert self._closes is not None, "a socket that stays open after terminal frames"
        if self._socket is not None:
            self._socket.hold_reading()
        await self._closes.turn()

    async def send(self, item: Outgoing) -> None:
        if self._socket is None or not self._socket.write(item.ws_frame):
            await self._asgi_send({"type": "websocket.send", "text": item.text})
        self._session.sent(item)


async def _subscribe_one(
    ws: WebSocket, services: Services, outbox: Outbox, session: Session
) -> None:
    try:
        job_id = job_id_param(ws)
        since = parse_since(ws.query_params.get("since"))
        principal = principal_of(ws.scope)
        await services.jobs.authorize(job_id, principal)
        owner = None if principal is None else principal.owner
        watch = await services.hub.watch(job_id, since, outbox, owner=owner)
    except DelineateError as exc:
        await ws.send_text(error_item(exc.code, exc.message).text)
        await _close(ws, exc.close_code, exc.message)
        return
    await OneJobSession(ws, services, outbox, session, watch).run()


def _multiplexed(
    ws: WebSocket, services: Services, outbox: Outbox, session: Session
) -> Coroutine[None, None, None]:
    return MuxSession(ws, services, outbox, session).run()  # no frame of its own per socket


subscribe_one = WebSocketEndpoint(_subscribe_one, "subscribe_one")
"""WS /v1/download/subscribe/{job_id}[?since=SEQ]"""

multiplexed = WebSocketEndpoint(_multiplexed, "multiplexed")
"""WS /v1/ws: many jobs, one socket."""


class SocketSession:
    """What both WebSocket endpoints do with a connection once it is accepted: read in the
    connection's own task; write frames directly from the hub's delivery; run a writer
    task only while messages have to wait (a replay, a terminal frame, a client that reads
    slowly): it sends what is queued and ends, and the next message that has to wait starts
    another. Reading stops when a writer ends the connection (terminal frame sent, send
    failed, or cancelled by an overflowing outbox). Thousands of these sit idle at once:
    every task, frame and dict here is per socket."""

    __slots__ = ("_frames", "_hub", "_main", "_outbox", "_watches", "_writer", "_ws")

    def __init__(
        self, ws: WebSocket, services: Services, outbox: Outbox, frames: FrameWriter
    ) -> None:
        self._ws, self._hub, self._outbox, self._frames = ws, services.hub, outbox, frames
        outbox.direct = frames.now
        self._watches: dict[str, Watch] = {}
        self._main: asyncio.Task[object] | None = None
        self._writer: asyncio.Task[bool] | None = None

    async def run(self) -> None:
        self._main = main = asyncio.current_task()
        assert main is not None
        if len(self._outbox) or self._outbox.overflowed:  # queued before the session ran
            self._start_writer()  # (a single-job replay; overflowed, the writer ends at once)
        else:
            self._outbox.start_writer = self._start_writer
        try:
            await self._read()
        except asyncio.CancelledError:
            if self._writer is None or not self._writer.done():
                raise  # cancelled from outside (shutdown)
            main.uncancel()  # the writer ended (done, overflowed or broken): stop reading
        finally:
            # A writer that ended in the same step as reading has its callback scheduled
            # already (removing it is too late): with no task to cancel it does nothing.
            self._main = None
            self._outbox.start_writer = None
            writer = self._writer
            if writer is not None:
                writer.remove_done_callback(self._writer_ended)
                writer.cancel()
                await asyncio.wait([writer])
            for watch in self._watches.values():
                self._hub.unwatch(watch)
            self._watches.clear()
        if writer is not None and not writer.cancelled():
            error = writer.exception()
            if error is not None and not isinstance(error, WebSocketDisconnect | OSError):
                raise error
        if self._outbox.overflowed:
            # A client that reads again gets what was buffered, then 1013; one that does not
            # is reset at CLOSE_DEADLINE_S.
            await _close(self._ws, CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON)
        else:
            await self._finish()

    def _start_writer(self) -> None:
        """``Outbox.start_writer``: a message that has to wait starts a writer. An
        overflowing outbox cancels it, since its send may be waiting forever on a client
        that stopped reading."""
        self._writer = writer = asyncio.ensure_future(self._write())
        self._outbox.on_overflow = writer.cancel
        writer.add_done_callback(self._writer_ended)

    def _writer_ended(self, writer: asyncio.Task[bool]) -> None:
        if writer is not self._writer:
            return  # drained; the next message that had to wait started another already
        if not writer.cancelled() and writer.exception() is None and writer.result():
            self._writer = None  # drained
        elif self._main is not None:
            self._main.cancel()

    async def _write(self) -> bool:
        """Send what is queued. True: all sent and the connection goes on (the next message
        that has to wait starts a writer again); False: the connection is done."""
        outbox = self._outbox
        while (item := outbox.pop()) is not None:
            if not await self._send(item):
                return False
        if outbox.overflowed:
            return False
        # In the same step as the check that nothing is queued: a message put after it
        # starts a new writer (or goes out directly), never waits behind this one.
        outbox.start_writer = self._start_writer
        return True

    async def _read(self) -> None:
        raise NotImplementedError

    async def _send(self, item: Outgoing) -> bool:
        """Send one queued message; False: the connection is done."""
        raise NotImplementedError

    async def _finish(self) -> None:
        """After reading and writing stopped, unless the client was too slow."""


class OneJobSession(SocketSession):
    """``/v1/download/subscribe/{job_id}``: one job's frames, then close 1000 after its
    terminal frame, on the close's turn in the replica's ``ClosePacer``.
    Client messages are read and ignored."""

    __slots__ = ()

    def __init__(
        self, ws: WebSocket, services: Services, outbox: Outbox, session: Session, watch: Watch
    ) -> None:
        frames = FrameWriter(ws, session, closes=services.closes)
        super().__init__(ws, services, outbox, frames)
        self._watches[watch.job_id] = watch

    async def _read(self) -> None:
        while (await self._ws.receive())["type"] != "websocket.disconnect":
            pass

    async def _send(self, item: Outgoing) -> bool:
        await self._frames.send(item)
        if item.terminal:
            await self._frames.close_turn()
            await _close(self._ws, CLOSE_NORMAL, JOB_FINISHED)
            return False
        return True


class MuxSession(SocketSession):
    """One ``/v1/ws`` connection: reads ops; a terminal frame's job is unwatched by the
    writer; a socket that follows nothing for IDLE_SOCKET_TIMEOUT_S is closed (4408)."""

    __slots__ = (
        "_idle", "_idle_timeout_s", "_jobs", "_max_depth", "_max_watches", "_principal", "_reading",
    )  # fmt: skip

    def __init__(self, ws: WebSocket, services: Services, outbox: Outbox, session: Session) -> None:
        super().__init__(ws, services, outbox, FrameWriter(ws, session, closes=None))
        self._jobs = services.jobs
        self._principal = principal_of(ws.scope)
        self._max_watches = services.settings.max_subscriptions_per_socket
        self._max_depth = services.settings.max_json_depth
        self._idle_timeout_s = services.settings.idle_socket_timeout_s
        self._idle = asyncio.timeout(None)
        self._reading = False

    async def _finish(self) -> None:
        if self._idle.expired():
            reason = f"idle: no subscription for {self._idle_timeout_s:g} s"
            await _close(self._ws, CLOSE_IDLE, reason)

    async def _send(self, item: Outgoing) -> bool:
        await self._frames.send(item)
        if item.terminal:
            watch = self._watches.pop(item.job_id, None)
            if watch is not None:
                self._hub.unwatch(watch)
                self._arm_idle()
        return True

    def _arm_idle(self) -> None:
        """A socket that follows nothing is closed after IDLE_SOCKET_TIMEOUT_S (4408)."""
        if self._reading and not self._watches:
            self._idle.reschedule(asyncio.get_running_loop().time() + self._idle_timeout_s)

    async def _read(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        with contextlib.suppress(TimeoutError):
            async with self._idle:
                self._reading = True
                self._arm_idle()
                try:
                    while True:
                        message = await self._ws.receive()
                        if message["type"] == "websocket.disconnect":
                            return
                        await self._on_message(message)
                        if current.cancelling():
                            # A cancel that arrived while an op awaited Redis could be
                            # lost inside redis-py (see server/delineate/redis/client.py); should a
                            # library still lose one, the session would otherwise wait for
                            # the next client message forever instead of closing.
                            raise asyncio.CancelledError
                finally:
                    self._reading = False

    async def _on_message(self, message: Message) -> None:
        text = message.get("text")
        if text is None:
            self._outbox.put(
                error_item("bad_request", "binary messages are not supported; send JSON text")
            )
            return
        if jsondepth.too_deep(text, self._max_depth):
            why = f"invalid message: JSON nested deeper than {self._max_depth} levels"
            self._outbox.put(error_item("bad_request", why))
            return
        try:
            op = op_decoder.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._outbox.put(error_item("bad_request", f"invalid message: {exc}"))
            return
        if isinstance(op, PingOp):
            self._outbox.put(control(PongMessage()))
        elif isinstance(op, SubscribeOp):
            await self._subscribe(op)
        elif isinstance(op, UnsubscribeOp):
            self._unsubscribe(op)

    async def _subscribe(self, op: SubscribeOp) -> None:
        ack = control(AckMessage(op="subscribe", job_id=op.job_id), op.job_id)
        if op.job_id in self._watches:
            self._outbox.put(ack)  # already following: subscribing again changes nothing
            return
        if len(self._watches) >= self._max_watches:
            message = f"at most {self._max_watches} subscriptions per socket"
            self._outbox.put(error_item("too_many_subscriptions", message, op.job_id))
            return
        try:
            # Every subscribe is checked: one socket may only follow its owner's jobs.
            await self._jobs.authorize(op.job_id, self._principal)
            owner = None if self._principal is None else self._principal.owner
            since = parse_position(op.since)
            watch = await self._hub.watch(op.job_id, since, self._outbox, preamble=ack, owner=owner)
        except DelineateError as exc:
            self._outbox.put(error_item(exc.code, exc.message, op.job_id))
            return
        # A finished job's terminal snapshot is already queued; the writer unwatches it.
        self._watches[op.job_id] = watch
        self._idle.reschedule(None)  # called from the reader: the timeout is entered

    def _unsubscribe(self, op: UnsubscribeOp) -> None:
        watch = self._watches.pop(op.job_id, None)
        if watch is None:
            self._outbox.put(error_item("not_subscribed", "not subscribed to this job", op.job_id))
            return
        self._hub.unwatch(watch)
        self._outbox.put(control(AckMessage(op="unsubscribe", job_id=op.job_id), op.job_id))
        self._arm_idle()

"""Server-Sent Events: the fallback transport, for clients or proxies without WebSocket.

``id:`` is the frame's position (``<epoch>:<seq>``), so a reconnecting EventSource sends
``Last-Event-ID`` and the hub replays exactly the frames after it. A ``: keepalive``
comment goes out when nothing else has for ``keepalive_s`` (proxies close idle streams),
and the stream ends after the job's terminal frame, on its turn in the replica's ``ClosePacer``
(``delineate.realtime.closing``). The response watches for the client going away and frees the
watch at once, rather than at the next write.

Ending a stream (its terminal frame, a drain, a slow consumer's overflow) writes its last
chunk at once; the response is complete once the client has everything, else the connection
is reset at CLOSE_DEADLINE_S (``wire.DirectStream.end``). The per-address slot and the gauge
are released then.

The request's own task serves the stream and waits for the client to go away. An event is
written straight to the response's transport as a body chunk (``wire.DirectStream``), from
the hub's delivery, without a task switch or the middlewares' send wrappers; the response's
start and end, a paused transport and what had to be queued go through ASGI, the queue in a
writer task that runs only while there is one. A drain (``realtime.draining``), an
overflowing outbox and the terminal event's turn stop the stream from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from delineate.errors import BadRequest
from delineate.http.auth import principal_of
from delineate.http.edge import RAW_SEND_KEY
from delineate.http.params import job_id_param, services_of
from delineate.realtime import resume
from delineate.realtime.closing import ClosePacer
from delineate.realtime.draining import Draining
from delineate.realtime.hub import Hub, Watch
from delineate.realtime.outbox import CONTROL_SEQ, Outgoing, outbox_for
from delineate.realtime.resume import Since
from delineate.realtime.session import Session
from delineate.uvicorn_ext.sockets import DirectStream, direct_stream
from delineate.wire import body_chunk, format_sse_event
from delineate_protocol.frames import POSITION_PATTERN

__all__ = ["EventStream", "format_retry", "format_sse_event", "parse_since", "stream"]

KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_SLACK_S = 0.005  # a timer may fire a hair early
KEEPALIVE_DUE = Outgoing("", CONTROL_SEQ, "keepalive", "")
"""Queued by the stream's timer when nothing went out for the keepalive interval."""
KEEPALIVE_CHUNK = body_chunk(KEEPALIVE)
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # tells nginx not to buffer this response
    "Connection": "keep-alive",
}


def format_retry(retry_ms: int) -> bytes:
    return f"retry: {retry_ms}\n\n".encode()


def resume_point(request: Request) -> Since | None:
    """``Last-Event-ID`` (a reconnecting EventSource) wins over ``?since=`` (the first request)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("since")
    return parse_since(raw)


_POSITION = re.compile(POSITION_PATTERN)


def parse_since(raw: str | None) -> Since | None:
    """A position from a query string or header: ``<epoch>:<seq>`` or a bare ``<seq>``."""
    if raw is None or raw == "":
        return None
    if not _POSITION.match(raw):
        raise BadRequest(
            "since / Last-Event-ID must be <epoch>:<seq> or a non-negative integer, "
            f"got {raw[:40]!r}"
        )
    return resume.parse_since(raw)


class EventStream(Response):
    """One event stream, served by the request's own task, as a WebSocket is
    (``websocket.SocketSession``): the task waits for the client to go away; events go out
    directly from the hub's delivery; a writer task runs only while events have to wait (a
    paused transport, another server) and ends once they are sent. Thousands of these sit
    open at once, and their ends come together when jobs end, so every task and every
    wake-up here is per stream."""

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub,
        watch: Watch,
        session: Session,
        release: Callable[[], None],
        draining: Draining,
        closes: ClosePacer,
        *,
        keepalive_s: float,
        retry_ms: int,
        close_deadline_s: float,
    ) -> None:
        self._release, self._draining, self._closes = release, draining, closes
        super().__init__(headers=SSE_HEADERS, media_type=self.media_type)
        # Response assumed an empty body; a stream has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._hub, self._watch, self._session = hub, watch, session
        self._keepalive_s, self._retry_ms = keepalive_s, retry_ms
        self._close_deadline_s = close_deadline_s
        self._last_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._direct: DirectStream | None = None
        self._send: Send | None = None
        self._main: asyncio.Task[object] | None = None
        self._writer: asyncio.Task[bool] | None = None
        self._listening = False
        self._stopping = False
        self._finished = False
        """The terminal event went out and its turn to end came."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._session.start()
        self._direct = direct_stream(scope.get(RAW_SEND_KEY))
        try:
            await self._serve(receive, send)
        finally:
            self._session.finish()
            self._watch.outbox.detach()
            self._release()

    async def _serve(self, receive: Receive, send: Send) -> None:
        outbox = self._watch.outbox
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await _body(send, format_retry(self._retry_ms))
        except BaseException:
            self._hub.unwatch(self._watch)
            raise
        self._main = main = asyncio.current_task()
        assert main is not None
        self._send = send
        self._last_sent = asyncio.get_running_loop().time()
        self._arm_keepalive()
        # A client that stopped reading leaves the writer stuck in a send: the outbox stops it.
        outbox.on_overflow = self._stop
        if self._direct is not None:
            outbox.direct = self._write_now
        if len(outbox) or outbox.overflowed:  # the replay, queued (or too long) before now
            self._start_writer()  # (on an overflowed outbox it ends at once: _stop)
        else:
            outbox.start_writer = self._start_writer
        self._draining.add(self._stop)  # (stops at once when the drain started already)
        cancels_before = main.cancelling()
        self._listening = True
        try:
            if not self._stopping:
                await _wait_disconnect(receive)
        except asyncio.CancelledError:
            # Ours (``_stop``) is taken back; one from outside (shutdown) in the same step
            # still counts, and goes on.
            if not self._stopping or main.uncancel() > cancels_before:
                raise
        finally:
            self._listening = False
            writer = await self._wind_down()
        error = None if writer is None or writer.cancelled() else writer.exception()
        del writer
        if error is not None and not isinstance(error, OSError):
            try:
                raise error
            finally:
                del error  # the traceback holds this frame, which would hold the error
        if self._finished or self._draining.is_set() or outbox.overflowed:
            # The terminal frame went out, the replica drains (EventSource reconnects
            # elsewhere) or the client is too slow (it resumes with Last-Event-ID).
            await self._end(send)

    async def _wind_down(self) -> asyncio.Task[bool] | None:
        """Stop writing and following the job; drop what refers back to this stream (a
        cycle only the cyclic collector would free). The writer, if one ran, to check."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._draining.discard(self._stop)
        self._watch.outbox.start_writer = None
        writer, self._writer, self._main = self._writer, None, None
        try:
            if writer is not None:
                writer.remove_done_callback(self._writer_ended)
                writer.cancel()
                await asyncio.wait([writer])
        finally:
            self._hub.unwatch(self._watch)
            self._send = None
        return writer

    def _stop(self) -> None:
        """End the stream: its terminal event's turn came, the replica drains
        (``Draining``), the outbox overflowed (``Outbox.on_overflow``), or the writer failed.
        A writer stuck in a send to a client that stopped reading is cancelled."""
        self._stopping = True
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        main = self._main
        if self._listening and main is not None:
            self._listening = False  # one cancel, which the task takes back (uncancel)
            main.cancel()

    def _start_writer(self) -> None:
        """``Outbox.start_writer``: an event that has to wait starts a writer."""
        self._writer = writer = asyncio.ensure_future(self._write())
        writer.add_done_callback(self._writer_ended)

    def _writer_ended(self, writer: asyncio.Task[bool]) -> None:
        if writer is not self._writer:
            return
        if not writer.cancelled() and writer.exception() is None and writer.result():
            self._writer = None  # drained; the next event that has to wait starts another
        else:
            self._stop()  # finished, failed or cancelled

    async def _write(self) -> bool:
        """Send what is queued through ASGI. True: all sent and the stream goes on; False:
        its terminal event went out and its turn to end came, or the outbox overflowed."""
        outbox, send = self._watch.outbox, self._send
        assert send is not None
        loop = asyncio.get_running_loop()
        while (item := outbox.pop()) is not None:
            if item is KEEPALIVE_DUE:
                await _body(send, KEEPALIVE)
                continue
            await _body(send, item.sse_event)
            self._last_sent = loop.time()
            self._session.sent(item)
            if item.terminal:
                await self._closes.turn()  # ending the response can wait; frames first
                self._finished = True
                return False
        if outbox.overflowed:
            return False
        # In the same step as the check that nothing is queued: an event put after it
        # starts a new writer (or goes out directly), never waits behind this one.
        outbox.start_writer = self._start_writer
        return True

    def _write_now(self, items: Sequence[Outgoing]) -> bool:
        """``Outbox.direct``: write events at once (frames published together, in one
        write). After the terminal event, the stream ends on its turn in the close pacer."""
        direct, last = self._direct, items[-1]
        if direct is None:
            return False
        if last is KEEPALIVE_DUE:  # always put alone
            return direct.write(KEEPALIVE_CHUNK)
        data = last.sse_chunk if len(items) == 1 else b"".join(i.sse_chunk for i in items)
        if not direct.write(data):
            return False
        self._last_sent = asyncio.get_running_loop().time()
        for item in items:
            self._session.sent(item)
        if last.terminal:
            self._closes.schedule(self._turn_to_end)
        return True

    def _turn_to_end(self) -> None:
        self._finished = True
        self._stop()

    async def _end(self, send: Send) -> None:
        """End the response; when this returns the client has taken it all, or
        CLOSE_DEADLINE_S passed and the connection was reset (a client that stopped
        reading keeps nothing pinned)."""
        if self._direct is not None and await self._direct.end(self._close_deadline_s):
            return
        # Another server (through ASGI, bounded), or the client is gone already.
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            async with asyncio.timeout(self._close_deadline_s):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _arm_keepalive(self) -> None:
        """One timer per stream, due a keepalive interval after the last event, rather than
        a timeout around every wait for the next frame (a timer per frame per socket)."""
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_at(self._last_sent + self._keepalive_s, self._keepalive_due)

    def _keepalive_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_sent >= self._keepalive_s - KEEPALIVE_SLACK_S:
            self._watch.outbox.put(KEEPALIVE_DUE)
            self._last_sent = now
        self._arm_keepalive()


async def _body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def stream(request: Request) -> Response:
    """GET /v1/download/stream/{job_id}: the job's frames as an event stream."""
    services = services_of(request)
    outbox = outbox_for(services.settings)
    address = services.connections.acquire(request)  # 429 past the per-address cap
    try:
        job_id = job_id_param(request)
        principal = principal_of(request.scope)
        await services.jobs.authorize(job_id, principal)
        owner = None if principal is None else principal.owner
        watch = await services.hub.watch(job_id, resume_point(request), outbox, owner=owner)
    except BaseException:
        services.connections.release(address)
        raise
    settings = services.settings
    session = Session(services.metrics, "sse", outbox)
    return EventStream(
        services.hub,
        watch,
        session,
        functools.partial(services.connections.release, address),
        services.draining,
        services.closes,
        keepalive_s=settings.sse_keepalive_s,
        retry_ms=settings.sse_retry_ms,
        close_deadline_s=settings.close_deadline_s,
    )

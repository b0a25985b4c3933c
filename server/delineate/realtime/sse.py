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

While the stream's writer waits on an empty outbox, an event is written straight to the
response's transport as a body chunk (``wire.DirectStream``), without a task switch or the
middlewares' send wrappers; the response's start and end, keepalives, a paused transport and
anything queued go through the writer and ASGI.
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
from delineate.realtime.hub import Hub, Watch
from delineate.realtime.outbox import CONTROL_SEQ, Outgoing, outbox_for
from delineate.realtime.resume import Since
from delineate.realtime.session import Session
from delineate.uvicorn_ext.sockets import DirectStream, direct_stream
from delineate.wire import format_sse_event
from delineate_protocol.frames import POSITION_PATTERN

__all__ = ["EventStream", "format_retry", "format_sse_event", "parse_since", "stream"]

KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_SLACK_S = 0.005  # a timer may fire a hair early
KEEPALIVE_DUE = Outgoing("", CONTROL_SEQ, "keepalive", "")
"""Queued by the stream's timer when nothing went out for the keepalive interval."""
STREAM_DONE = Outgoing("", CONTROL_SEQ, "done", "")
"""Queued on its close's turn once the terminal event went out directly: end the response."""
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
    media_type = "text/event-stream"

    def __init__(
        self,
        hub: Hub,
        watch: Watch,
        session: Session,
        release: Callable[[], None],
        draining: asyncio.Event,
        closes: ClosePacer,
        *,
        keepalive_s: float,
        retry_ms: int,
        close_deadline_s: float,
    ) -> None:
        self._release, self._draining, self._closes = release, draining, closes
        self._started = False
        super().__init__(headers=SSE_HEADERS, media_type=self.media_type)
        # Response assumed an empty body; a stream has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._hub, self._watch, self._session = hub, watch, session
        self._keepalive_s, self._retry_ms = keepalive_s, retry_ms
        self._close_deadline_s = close_deadline_s
        self._last_sent = 0.0
        self._keepalive: asyncio.TimerHandle | None = None
        self._direct: DirectStream | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._session.start()
        self._direct = direct_stream(scope.get(RAW_SEND_KEY))
        try:
            await self._stream(receive, send)
        finally:
            self._session.finish()
            self._watch.outbox.detach()
            self._release()

    async def _stream(self, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        # A client that stopped reading leaves the pump stuck in a send: the outbox stops it.
        self._watch.outbox.on_overflow = pump.cancel
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        drain = asyncio.ensure_future(self._draining.wait())
        try:
            await asyncio.wait({pump, gone, drain}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._hub.unwatch(self._watch)
            for task in (pump, gone, drain):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump
        finished = pump.done() and not pump.cancelled() and pump.exception() is None
        if self._started and (finished or self._draining.is_set() or self._overflowed):
            # The terminal frame went out, the replica drains (EventSource reconnects
            # elsewhere) or the client is too slow (it resumes with Last-Event-ID).
            await self._end(send)

    @property
    def _overflowed(self) -> bool:
        return self._watch.outbox.overflowed

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

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._started = True
        await _body(send, format_retry(self._retry_ms))
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        self._arm_keepalive()
        if self._direct is not None:
            self._watch.outbox.direct = self._write_now
        try:
            while (item := await self._watch.outbox.get()) is not None:
                if item is KEEPALIVE_DUE:
                    await _body(send, KEEPALIVE)
                    continue
                if item is STREAM_DONE:
                    return
                await _body(send, item.sse_event)
                self._last_sent = loop.time()
                self._session.sent(item)
                if item.terminal:
                    await self._closes.turn()  # ending the response can wait; frames first
                    return
            # The outbox overflowed: end the stream; EventSource reconnects with Last-Event-ID.
        finally:
            if self._keepalive is not None:
                self._keepalive.cancel()

    def _write_now(self, items: Sequence[Outgoing]) -> bool:
        """``Outbox.direct``: write events at once (frames published together, in one
        write). After the terminal event, the end of the response is queued for its turn
        in the close pacer."""
        last = items[-1]
        # The two sentinels are always put alone.
        if self._direct is None or last is KEEPALIVE_DUE or last is STREAM_DONE:
            return False
        data = last.sse_chunk if len(items) == 1 else b"".join(i.sse_chunk for i in items)
        if not self._direct.write(data):
            return False
        self._last_sent = asyncio.get_running_loop().time()
        for item in items:
            self._session.sent(item)
        if last.terminal:
            outbox = self._watch.outbox
            self._closes.schedule(lambda: outbox.put(STREAM_DONE))
        return True

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

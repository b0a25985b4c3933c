"""Following jobs: reconnects with backoff, resumes by position, falls back WebSocket -> SSE
-> polling.

Every transport yields the server's frames; this module keeps the last position seen, drops
anything at or below it (so a reconnect never repeats a frame), and resumes with
``since`` / ``Last-Event-ID``. A transport that cannot work here (the WebSocket upgrade is
refused by a proxy, the event stream is blocked) is dropped for the next one at once; a
dropped connection is retried on the same transport after a backoff delay (for SSE, at least
the server's ``retry:``). Each connection asks the token source again, and a 401 at the
handshake is retried once with a fresh token when the source can give one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent
from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
)

from delineate_client.errors import (
    ConnectionFailed,
    DelineateError,
    JobFailed,
    JobNotFound,
    Unauthorized,
)
from delineate_client.state import ConnectionState, StateChange
from delineate_protocol.codes import ErrorCode
from delineate_protocol.frames import (
    FRAME_TYPES,
    AckMessage,
    AnyFrame,
    ErrorMessage,
    FailedFrame,
    PongMessage,
    SnapshotFrame,
    UnknownFrame,
    decode_frame,
    decode_server_message,
)

if TYPE_CHECKING:
    from delineate_client.client import AsyncClient

log = logging.getLogger("delineate.sdk")
TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})
MAX_FAILURES = 10
FALLBACK_AFTER = 3
Received = AnyFrame | UnknownFrame


class TransportUnavailable(Exception):
    """This transport cannot work between us and the server; try the next one."""


class ConnectionLost(Exception):
    """The connection ended before the job did; reconnect (after a backoff delay)."""


def is_terminal(frame: Received) -> bool:
    if isinstance(frame, SnapshotFrame):
        return frame.job.status.is_terminal
    if isinstance(frame, UnknownFrame):
        return False
    return frame.__struct_config__.tag in TERMINAL_TYPES


def check_failure(frame: Received, raise_on_failure: bool) -> None:
    if not raise_on_failure:
        return
    if isinstance(frame, FailedFrame):
        raise JobFailed(frame.job_id, frame.error.code, frame.error.message)
    if isinstance(frame, SnapshotFrame) and frame.job.error is not None:
        raise JobFailed(frame.job_id, frame.job.error.code, frame.job.error.message)


class Cursor:
    """Where a follower is in one job's stream: (epoch, seq). A frame is new unless it is of
    the same epoch at or below the seq; a frame of another epoch (after the server's
    ``recovered: false`` snapshot of it) moves the cursor there."""

    __slots__ = ("epoch", "seq")

    def __init__(self, since: int | str | None = None) -> None:
        self.epoch, self.seq = "", -1
        if isinstance(since, int):
            self.seq = since
        elif since:
            epoch, _, seq = since.rpartition(":")
            self.epoch, self.seq = epoch, int(seq)

    def accept(self, frame: Received) -> bool:
        """Whether ``frame`` is new to this follower (and the cursor moves to it)."""
        if isinstance(frame, UnknownFrame) and frame.seq < 0:
            return True  # no position to judge it by
        restart = isinstance(frame, SnapshotFrame) and not frame.recovered
        same_epoch = frame.epoch == self.epoch or not (frame.epoch and self.epoch)
        if same_epoch and frame.seq <= self.seq and not restart:
            return False
        self.epoch, self.seq = frame.epoch or self.epoch, frame.seq
        return True

    @property
    def position(self) -> str | None:
        """``<epoch>:<seq>`` for ``since`` / ``Last-Event-ID``; None before any frame."""
        if self.seq < 0:
            return None
        return f"{self.epoch}:{self.seq}" if self.epoch else str(self.seq)


def skip_unknown(frame: Received, wanted: bool) -> bool:
    if isinstance(frame, UnknownFrame) and not wanted:
        log.debug("job %s: skipping a frame of unknown type %r", frame.job_id, frame.type)
        return True
    return False


class Subscription:
    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        since: int | str | None,
        raise_on_failure: bool,
        transports: tuple[str, ...] | None = None,
        *,
        unknown: bool = False,
    ) -> None:
        self.client, self.job_id = client, job_id
        self.transports = client.transports if transports is None else transports
        self.cursor = Cursor(since)
        self.raise_on_failure, self.unknown = raise_on_failure, unknown
        self.transport = ""
        self.server_retry: float | None = None  # the event stream's ``retry:``, in seconds
        self._refused = False  # the last handshake got a 401 (retry once, fresh token)

    async def frames(self) -> AsyncGenerator[Received, None]:
        try:
            async with contextlib.aclosing(self._follow()) as frames:
                async for frame in frames:
                    yield frame
        except BaseException as exc:
            self._report(ConnectionState.CLOSED, error=str(exc) or type(exc).__name__)
            raise
        self._report(ConnectionState.CLOSED)

    async def _follow(self) -> AsyncGenerator[Received, None]:
        transports = list(self.transports)
        failures = 0
        delivered = False  # has the current transport ever worked for this subscription?
        while transports:
            self.transport = transports[0]
            self._report(ConnectionState.CONNECTING)
            try:
                async with contextlib.aclosing(self._open(self.transport)) as stream:
                    async for frame in stream:
                        if not delivered or failures:
                            self._report(ConnectionState.CONNECTED)
                        failures, delivered, self._refused = 0, True, False
                        if not self.cursor.accept(frame) or skip_unknown(frame, self.unknown):
                            continue
                        yield frame
                        if is_terminal(frame):
                            check_failure(frame, self.raise_on_failure)
                            return
                raise ConnectionLost("the stream ended before the job did")
            except Unauthorized:
                if self._refused or not self.client.credentials.refreshable:
                    raise
                self._refused = True  # the token expired: once more, with a fresh one
            except TransportUnavailable as exc:
                transports.pop(0)
                delivered = False
                self._report(ConnectionState.FALLBACK, error=str(exc))
            except ConnectionLost as exc:
                failures += 1
                if not delivered and failures >= FALLBACK_AFTER and len(transports) > 1:
                    # Never worked here and keeps failing: try the next transport.
                    transports.pop(0)
                    failures = 0
                    self._report(ConnectionState.FALLBACK, error=str(exc))
                    continue
                log.info("job %s: %s connection lost (%s); retry %d",
                         self.job_id, self.transport, exc, failures)  # fmt: skip
                if failures > MAX_FAILURES:
                    raise ConnectionFailed(f"gave up following {self.job_id}") from None
                delay = self._delay(failures - 1)
                self._report(ConnectionState.RECONNECTING, delay=delay, error=str(exc))
                await asyncio.sleep(delay)
        raise ConnectionFailed(f"no transport could follow job {self.job_id}")

    def _delay(self, attempt: int) -> float:
        delay = self.client.backoff.delay(attempt)
        if self.transport == "sse" and self.server_retry is not None:
            return max(delay, self.server_retry)
        return delay

    def _report(
        self, state: ConnectionState, *, delay: float | None = None, error: str | None = None
    ) -> None:
        change = StateChange(state=state, transport=self.transport, job_ids=(self.job_id,),
                             delay=delay, error=error)  # fmt: skip
        self.client.report(change)

    def _open(self, transport: str) -> AsyncGenerator[Received, None]:
        if transport == "websocket":
            return self._websocket()
        if transport == "sse":
            return self._sse()
        return self._polling()

    def _websocket(self) -> AsyncGenerator[Received, None]:
        # The socket's own generator, not one wrapping it: every frame passes through each
        # generator layer, and a client follows thousands of frames.
        at = self.cursor.position
        query = f"?since={at}" if at is not None else ""
        url = self.client.ws_url(f"/v1/download/subscribe/{self.job_id}{query}")
        return _socket_messages(self.client, url, [], lingers=True)

    async def _sse(self) -> AsyncGenerator[Received, None]:
        headers = await self.client.credentials.headers(fresh=True)
        if (at := self.cursor.position) is not None:
            headers["Last-Event-ID"] = at
        path = f"/v1/download/stream/{self.job_id}"
        try:
            async with self.client.http.stream(
                "GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                await self._check_stream(response)
                async for event in EventSource(response).aiter_sse():
                    if event.retry is not None:
                        self.server_retry = event.retry / 1000
                    if event.data:
                        yield _event_frame(event)
        except httpx.TransportError as exc:
            raise ConnectionLost(str(exc)) from exc

    async def _check_stream(self, response: httpx.Response) -> None:
        if response.status_code == 200 and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            return
        body = await response.aread()
        if response.status_code == 401:
            raise Unauthorized(401, _json_or_text(body))
        if response.status_code == 404 and b"requestId" in body:
            raise JobNotFound(404, msgspec.json.decode(body))
        if response.status_code in (429, 500, 502, 503, 504):
            raise ConnectionLost(f"event stream failed (HTTP {response.status_code})")
        raise TransportUnavailable(f"event stream unavailable (HTTP {response.status_code})")

    async def _polling(self) -> AsyncGenerator[Received, None]:
        try:
            while True:
                job = await self.client.status(self.job_id)
                if (
                    job.epoch != self.cursor.epoch
                    or job.seq > self.cursor.seq
                    or job.status.is_terminal
                ):
                    yield SnapshotFrame(job_id=self.job_id, seq=job.seq, epoch=job.epoch, job=job)
                await asyncio.sleep(self.client.poll_interval)
        except ConnectionFailed as exc:
            raise ConnectionLost(str(exc)) from exc


def _event_frame(event: ServerSentEvent) -> Received:
    """An event's frame. The ``event:`` name is the frame's type; an event of a name this
    version does not know (a newer server) is an ``UnknownFrame``, whatever its data."""
    if event.event in ("", "message") or event.event in FRAME_TYPES:
        return decode_frame(event.data)
    frame = decode_frame(event.data)
    if isinstance(frame, UnknownFrame):
        return frame
    return UnknownFrame(type=event.event, job_id=frame.job_id, seq=frame.seq, epoch=frame.epoch,
                        data=msgspec.json.decode(event.data))  # fmt: skip


def _json_or_text(body: bytes | bytearray) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return bytes(body).decode(errors="replace")


def _connect_options(client: AsyncClient, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {"open_timeout": 10}
    if url.startswith("wss:"):
        options["ssl"] = client.ssl_context or ssl.create_default_context()
    options["proxy"] = client.proxy or (True if client.trust_env else None)
    return options


async def _socket_messages(
    client: AsyncClient, url: str, opening: list[str], *, lingers: bool = False
) -> AsyncGenerator[Received, None]:
    """Connect (a fresh token), send ``opening``, then yield the job frames that arrive,
    with the SDK's error mapping; an error message becomes the matching exception.

    ``lingers``: the server closes this socket after the job's terminal frame (a
    single-job socket). From that frame on the connection is the client's to let go
    (``AsyncClient.linger``): the server closes it on its turn, as RFC 6455 (7.1.1) asks,
    and the consumer does not wait for that."""
    headers = await client.credentials.headers(fresh=True)
    try:
        ws = await connect(url, additional_headers=headers, **_connect_options(client, url))
    except InvalidStatus as exc:
        _refused(exc)
        if exc.response.status_code >= 500:  # a replica restarting: retry, same transport
            raise ConnectionLost(f"WebSocket upgrade failed: {exc}") from exc
        raise TransportUnavailable(f"WebSocket upgrade refused: {exc}") from exc
    except InvalidMessage as exc:
        # Cut mid-handshake: a network error, as websockets' own retry rule classes it.
        if isinstance(exc.__cause__, EOFError):
            raise ConnectionLost(f"WebSocket handshake cut: {exc}") from exc
        raise TransportUnavailable(f"WebSocket handshake failed: {exc}") from exc
    except InvalidHandshake as exc:
        raise TransportUnavailable(f"WebSocket handshake failed: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise ConnectionLost(str(exc)) from exc
    let_go = False
    try:
        for text in opening:
            await ws.send(text)
        async for raw in ws:
            message = decode_server_message(raw)
            if isinstance(message, ErrorMessage):
                if message.code == "backend_unavailable":  # Redis failing over: try again
                    raise ConnectionLost(message.message)
                raise _job_error(message)
            if isinstance(message, AckMessage | PongMessage):
                continue
            if lingers and not let_go and is_terminal(message):
                let_go = True
                client.linger(ws)
            yield message
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        raise ConnectionLost(str(exc)) from exc
    finally:
        if not let_go:
            await ws.close()


def _job_error(message: ErrorMessage) -> DelineateError:
    if message.code == ErrorCode.NOT_FOUND:
        return JobNotFound(404, {"error": "Not Found", "message": message.message})
    return DelineateError(f"{message.code}: {message.message}")


async def follow_many(
    client: AsyncClient, job_ids: list[str], raise_on_failure: bool
) -> AsyncGenerator[AnyFrame, None]:
    """Frames of many jobs over /v1/ws; per job exactly once, across reconnects."""
    last = {job_id: Cursor() for job_id in job_ids}
    open_jobs = set(job_ids)
    failures = 0
    refused = False
    while open_jobs:
        change = StateChange(state=ConnectionState.CONNECTING, transport="websocket",
                             job_ids=tuple(sorted(open_jobs)))  # fmt: skip
        client.report(change)
        try:
            async with contextlib.aclosing(_multiplexed(client, last, open_jobs)) as stream:
                async for frame in stream:
                    failures, refused = 0, False
                    if not last[frame.job_id].accept(frame) or skip_unknown(frame, False):
                        continue
                    assert not isinstance(frame, UnknownFrame)
                    yield frame
                    if is_terminal(frame):
                        open_jobs.discard(frame.job_id)
                        check_failure(frame, raise_on_failure)
                        if not open_jobs:
                            return
        except Unauthorized:
            if refused or not client.credentials.refreshable:
                raise
            refused = True
        except TransportUnavailable:
            merged = _merged(client, sorted(open_jobs), last, raise_on_failure)
            async with contextlib.aclosing(merged) as stream:
                async for frame in stream:
                    yield frame
            return
        except ConnectionLost:
            failures += 1
            if failures > MAX_FAILURES:
                raise ConnectionFailed("gave up following the jobs") from None
            await asyncio.sleep(client.backoff.delay(failures - 1))


async def _multiplexed(
    client: AsyncClient, last: dict[str, Cursor], open_jobs: set[str]
) -> AsyncGenerator[Received, None]:
    ops = []
    for job_id in sorted(open_jobs):
        op: dict[str, Any] = {"op": "subscribe", "jobId": job_id}
        if (at := last[job_id].position) is not None:
            op["since"] = at
        ops.append(msgspec.json.encode(op).decode())
    async with contextlib.aclosing(_socket_messages(client, client.ws_url("/v1/ws"), ops)) as ws:
        async for frame in ws:
            yield frame
    raise ConnectionLost("the socket closed")


async def _merged(
    client: AsyncClient, job_ids: list[str], last: dict[str, Cursor], raise_on_failure: bool
) -> AsyncGenerator[AnyFrame, None]:
    """Fallback without WebSocket: one SSE/polling subscription per job, merged."""
    queue: asyncio.Queue[AnyFrame | BaseException | None] = asyncio.Queue()

    async def pump(job_id: str) -> None:
        since = last[job_id].position
        fallbacks = tuple(t for t in client.transports if t != "websocket")
        sub = Subscription(client, job_id, since, False, fallbacks)
        try:
            async with contextlib.aclosing(sub.frames()) as frames:
                async for frame in frames:
                    if not isinstance(frame, UnknownFrame):
                        await queue.put(frame)
        except BaseException as exc:
            await queue.put(exc)
            raise
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(j)) for j in job_ids]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
                if is_terminal(item):
                    check_failure(item, raise_on_failure)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)


def _refused(exc: InvalidStatus) -> None:
    """A 401 at the handshake is an answer, not a transport problem: no fallback."""
    if exc.response.status_code == 401:
        raise Unauthorized(401, _json_or_text(exc.response.body or b"{}")) from exc

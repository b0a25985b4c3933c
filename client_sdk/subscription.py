"""Following jobs: reconnects with backoff, resumes by seq, falls back WebSocket -> SSE -> polling.

Every transport yields the server's frames; this module keeps the last seq seen, drops
anything at or below it (so a reconnect never repeats a frame), and resumes with
``since`` / ``Last-Event-ID``. A transport that cannot work here (the WebSocket upgrade is
refused by a proxy, the event stream is blocked) is dropped for the next one at once; a
dropped connection is retried on the same transport after a backoff delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from client_sdk.errors import (
    ConnectionFailed,
    DelineateError,
    JobFailed,
    JobNotFound,
    Unauthorized,
)
from server.frames import (
    AckMessage,
    AnyFrame,
    ErrorMessage,
    FailedFrame,
    PongMessage,
    SnapshotFrame,
    frame_decoder,
    server_message_decoder,
)

if TYPE_CHECKING:
    from client_sdk.client import AsyncClient

log = logging.getLogger("delineate.sdk")
TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})
MAX_FAILURES = 10
FALLBACK_AFTER = 3


class TransportUnavailable(Exception):
    """This transport cannot work between us and the server; try the next one."""


class ConnectionLost(Exception):
    """The connection ended before the job did; reconnect (after a backoff delay)."""


def is_terminal(frame: AnyFrame) -> bool:
    if isinstance(frame, SnapshotFrame):
        return frame.job.status.is_terminal
    return frame.__struct_config__.tag in TERMINAL_TYPES


def check_failure(frame: AnyFrame, raise_on_failure: bool) -> None:
    if not raise_on_failure:
        return
    if isinstance(frame, FailedFrame):
        raise JobFailed(frame.job_id, frame.error.code, frame.error.message)
    if isinstance(frame, SnapshotFrame) and frame.job.error is not None:
        raise JobFailed(frame.job_id, frame.job.error.code, frame.job.error.message)


class Subscription:
    def __init__(
        self,
        client: AsyncClient,
        job_id: str,
        since: int | None,
        raise_on_failure: bool,
        transports: tuple[str, ...] | None = None,
    ) -> None:
        self.client, self.job_id = client, job_id
        self.transports = client.transports if transports is None else transports
        self.last = -1 if since is None else since
        self.raise_on_failure = raise_on_failure
        self.transport = ""

    async def frames(self) -> AsyncGenerator[AnyFrame, None]:
        transports = list(self.transports)
        failures = 0
        delivered = False  # has the current transport ever worked for this subscription?
        while transports:
            self.transport = transports[0]
            try:
                async with contextlib.aclosing(self._open(self.transport)) as stream:
                    async for frame in stream:
                        failures, delivered = 0, True
                        if frame.seq <= self.last:
                            continue
                        self.last = frame.seq
                        yield frame
                        if is_terminal(frame):
                            check_failure(frame, self.raise_on_failure)
                            return
                raise ConnectionLost("the stream ended before the job did")
            except TransportUnavailable:
                transports.pop(0)
                delivered = False
                continue
            except ConnectionLost as exc:
                failures += 1
                if not delivered and failures >= FALLBACK_AFTER and len(transports) > 1:
                    # Never worked here and keeps failing: try the next transport.
                    transports.pop(0)
                    failures = 0
                    continue
                log.info(
                    "job %s: %s connection lost (%s); retry %d",
                    self.job_id,
                    self.transport,
                    exc,
                    failures,
                )
                if failures > MAX_FAILURES:
                    raise ConnectionFailed(f"gave up following {self.job_id}") from None
                await asyncio.sleep(self.client.backoff.delay(failures - 1))
        raise ConnectionFailed(f"no transport could follow job {self.job_id}")

    def _open(self, transport: str) -> AsyncGenerator[AnyFrame, None]:
        if transport == "websocket":
            return self._websocket()
        if transport == "sse":
            return self._sse()
        return self._polling()

    async def _websocket(self) -> AsyncGenerator[AnyFrame, None]:
        query = f"?since={self.last}" if self.last >= 0 else ""
        url = self.client.ws_url(f"/v1/download/subscribe/{self.job_id}{query}")
        try:
            headers = self.client.auth_headers()
            async with connect(url, additional_headers=headers, open_timeout=10) as ws:
                async for frame in _frames_of(ws):
                    yield frame
        except InvalidStatus as exc:
            _refused(exc)
            if exc.response.status_code >= 500:  # a replica restarting: retry, same transport
                raise ConnectionLost(f"WebSocket upgrade failed: {exc}") from exc
            raise TransportUnavailable(f"WebSocket upgrade refused: {exc}") from exc
        except InvalidHandshake as exc:
            raise TransportUnavailable(f"WebSocket handshake failed: {exc}") from exc
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            raise ConnectionLost(str(exc)) from exc

    async def _sse(self) -> AsyncGenerator[AnyFrame, None]:
        headers = self.client.auth_headers()
        if self.last >= 0:
            headers["Last-Event-ID"] = str(self.last)
        path = f"/v1/download/stream/{self.job_id}"
        try:
            async with self.client.http.stream(
                "GET", path, headers=headers, timeout=None
            ) as response:
                await self._check_stream(response)
                async for data in _sse_data(response):
                    yield frame_decoder.decode(data)
        except httpx.TransportError as exc:
            raise ConnectionLost(str(exc)) from exc

    async def _check_stream(self, response: httpx.Response) -> None:
        if response.status_code == 200 and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            return
        body = await response.aread()
        if response.status_code == 401:
            raise Unauthorized(401, msgspec.json.decode(body))
        if response.status_code == 404 and b"requestId" in body:
            raise JobNotFound(404, msgspec.json.decode(body))
        if response.status_code in (429, 500, 502, 503, 504):
            raise ConnectionLost(f"event stream failed (HTTP {response.status_code})")
        raise TransportUnavailable(f"event stream unavailable (HTTP {response.status_code})")

    async def _polling(self) -> AsyncGenerator[AnyFrame, None]:
        try:
            while True:
                job = await self.client.status(self.job_id)
                if job.seq > self.last or job.status.is_terminal:
                    yield SnapshotFrame(job_id=self.job_id, seq=job.seq, job=job)
                await asyncio.sleep(self.client.poll_interval)
        except ConnectionFailed as exc:
            raise ConnectionLost(str(exc)) from exc


async def _sse_data(response: httpx.Response) -> AsyncGenerator[str, None]:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            yield "\n".join(data)
            data = []


async def _frames_of(ws: ClientConnection) -> AsyncGenerator[AnyFrame, None]:
    """The job frames a socket carries; an error message becomes the matching exception."""
    async for raw in ws:
        message = server_message_decoder.decode(raw)
        if isinstance(message, ErrorMessage):
            raise _job_error(message)
        if not isinstance(message, AckMessage | PongMessage):
            yield message


def _job_error(message: ErrorMessage) -> DelineateError:
    if message.code == "not_found":
        return JobNotFound(404, {"error": "Not Found", "message": message.message})
    return DelineateError(f"{message.code}: {message.message}")


async def follow_many(
    client: AsyncClient, job_ids: list[str], raise_on_failure: bool
) -> AsyncGenerator[AnyFrame, None]:
    """Frames of many jobs over /v1/ws; per job exactly once, across reconnects."""
    last = dict.fromkeys(job_ids, -1)
    open_jobs = set(job_ids)
    failures = 0
    while open_jobs:
        try:
            async with contextlib.aclosing(_multiplexed(client, last, open_jobs)) as stream:
                async for frame in stream:
                    failures = 0
                    if frame.seq <= last[frame.job_id]:
                        continue
                    last[frame.job_id] = frame.seq
                    yield frame
                    if is_terminal(frame):
                        open_jobs.discard(frame.job_id)
                        check_failure(frame, raise_on_failure)
                        if not open_jobs:
                            return
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
    client: AsyncClient, last: dict[str, int], open_jobs: set[str]
) -> AsyncGenerator[AnyFrame, None]:
    try:
        async with connect(client.ws_url("/v1/ws"), additional_headers=client.auth_headers()) as ws:
            for job_id in sorted(open_jobs):
                op: dict[str, Any] = {"op": "subscribe", "jobId": job_id}
                if last[job_id] >= 0:
                    op["since"] = last[job_id]
                await ws.send(msgspec.json.encode(op).decode())
            async for frame in _frames_of(ws):
                yield frame
    except InvalidStatus as exc:
        _refused(exc)
        if exc.response.status_code >= 500:
            raise ConnectionLost(str(exc)) from exc
        raise TransportUnavailable(str(exc)) from exc
    except InvalidHandshake as exc:
        raise TransportUnavailable(str(exc)) from exc
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        raise ConnectionLost(str(exc)) from exc
    raise ConnectionLost("the socket closed")


async def _merged(
    client: AsyncClient, job_ids: list[str], last: dict[str, int], raise_on_failure: bool
) -> AsyncGenerator[AnyFrame, None]:
    """Fallback without WebSocket: one SSE/polling subscription per job, merged."""
    queue: asyncio.Queue[AnyFrame | BaseException | None] = asyncio.Queue()

    async def pump(job_id: str) -> None:
        since = last[job_id] if last[job_id] >= 0 else None
        fallbacks = tuple(t for t in client.transports if t != "websocket")
        sub = Subscription(client, job_id, since, False, fallbacks)
        try:
            async with contextlib.aclosing(sub.frames()) as frames:
                async for frame in frames:
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
    """A 401 at the handshake is an answer, not a transport problem: no retry, no fallback."""
    if exc.response.status_code == 401:
        body = exc.response.body or b"{}"
        raise Unauthorized(401, msgspec.json.decode(body)) from exc

"""``AsyncClient``: the job API over httpx, and ``subscribe()`` over WebSocket, SSE or polling.

    async with AsyncClient("http://127.0.0.1:3000", token=get_token) as client:
        job = await client.initiate([70000, 70007])
        async for frame in client.subscribe(job.job_id):
            print(frame.seq, type(frame).__name__)
        await client.download(job.job_id, "bundle.zip")

Frames are the protocol's msgspec types (``delineate_protocol``), so nothing is parsed by
hand. ``status`` and ``result`` are retried with backoff when the server cannot be reached or
answers 429/502/503/504; ``initiate`` only when it carries an idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urljoin

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection

from delineate_client.auth import Credentials, TokenSource
from delineate_client.backoff import Backoff
from delineate_client.errors import (
    ConnectionFailed,
    DelineateError,
    HTTPError,
    JobNotFound,
    Timeout,
    Unauthorized,
)
from delineate_client.state import StateCallback, StateChange
from delineate_client.subscription import Subscription, follow_many
from delineate_protocol.frames import AnyFrame, JobSnapshot, UnknownFrame
from delineate_protocol.schemas import InitiateResponse, ResultResponse

T = TypeVar("T")
Job = InitiateResponse
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DownloadProgress = Callable[[int, int | None], None]
"""Called with (bytes on disk, total bytes or None) as a download proceeds."""


LINGER_S = 10.0
"""How long a socket whose job ended waits for the server's close before closing itself."""
CLOSE_GRACE_S = 1.0
"""How long ``aclose`` gives those sockets to finish their closing handshake."""


async def _server_close(ws: ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.wait_closed(), LINGER_S)
    except TimeoutError:
        await ws.close()


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        token: TokenSource | None = None,
        *,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        transports: Sequence[str] = ("websocket", "sse", "polling"),
        poll_interval: float = 1.0,
        retries: int = 3,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        on_state: StateCallback | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """``token``: a string, or a callable (plain or async) returning a fresh one, asked
        again before each reconnect and after a 401. ``ssl_context`` and ``proxy`` apply to
        HTTP and WebSocket alike; with ``trust_env`` the usual proxy variables are honoured."""
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(token)
        self.ssl_context, self.proxy, self.trust_env = ssl_context, proxy, trust_env
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            verify=ssl_context if ssl_context is not None else True,
            proxy=proxy,
            trust_env=trust_env,
        )
        self.backoff = backoff or Backoff()
        self.transports = tuple(transports)
        self.poll_interval = poll_interval
        self.retries = retries
        self.on_state = on_state
        self._lingering: dict[ClientConnection, asyncio.Task[None]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._let_go_now()

    def linger(self, ws: ClientConnection) -> None:
        """A single-job socket whose terminal frame arrived: the server closes it next (paced
        when many jobs end at once), so wait for that in the background, up to LINGER_S,
        then close it from this side. The client that closes first makes the server answer
        every close at once, ahead of other jobs' last frames; this way the server goes
        first, as RFC 6455 (7.1.1) asks, and the caller does not wait for either."""
        task = asyncio.ensure_future(_server_close(ws))
        self._lingering[ws] = task
        task.add_done_callback(lambda _: self._lingering.pop(ws, None))

    async def _let_go_now(self) -> None:
        """``aclose``: close the sockets still waiting for the server's close, from this
        side, for at most CLOSE_GRACE_S; then drop what is left."""
        if not self._lingering:
            return
        sockets = list(self._lingering)
        for task in self._lingering.values():
            task.cancel()
        closes = [asyncio.ensure_future(ws.close()) for ws in sockets]
        _, late = await asyncio.wait(closes, timeout=CLOSE_GRACE_S)
        for close in late:
            close.cancel()
        for ws in sockets:
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()

    # --- the job API -------------------------------------------------------------------

    async def initiate(self, file_ids: Sequence[int], idempotency_key: str | None = None) -> Job:
        """Start a job. Retried after a lost connection only with an ``idempotency_key``
        (the server then answers a repeat with the first job, never a second one)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"file_ids": list(file_ids)}
        return await self._request(
            "POST",
            "/v1/download/initiate",
            Job,
            retry=idempotency_key is not None,
            json=body,
            headers=headers,
        )

    async def status(self, job_id: str) -> JobSnapshot:
        path = f"/v1/download/status/{job_id}"
        return await self._request("GET", path, JobSnapshot, retry=True)

    async def result(self, job_id: str) -> ResultResponse:
        path = f"/v1/download/result/{job_id}"
        return await self._request("GET", path, ResultResponse, retry=True)

    async def cancel(self, job_id: str) -> JobSnapshot:
        return await self._request("POST", f"/v1/download/cancel/{job_id}", JobSnapshot)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:  # noqa: ASYNC109
        """Follow the job until it ends; return its final document (``Timeout`` if too long)."""
        try:
            async with (
                asyncio.timeout(timeout),
                contextlib.aclosing(self.subscribe(job_id)) as frames,
            ):
                async for _ in frames:
                    pass
        except TimeoutError as exc:
            raise Timeout(f"job {job_id} did not finish within {timeout} s") from exc
        return await self.status(job_id)

    @overload
    def subscribe(
        self,
        job_id: str,
        since: int | str | None = None,
        *,
        raise_on_failure: bool = False,
        unknown: Literal[False] = False,
    ) -> AsyncGenerator[AnyFrame, None]: ...

    @overload
    def subscribe(
        self,
        job_id: str,
        since: int | str | None = None,
        *,
        raise_on_failure: bool = False,
        unknown: Literal[True],
    ) -> AsyncGenerator[AnyFrame | UnknownFrame, None]: ...

    def subscribe(
        self,
        job_id: str,
        since: int | str | None = None,
        *,
        raise_on_failure: bool = False,
        unknown: bool = False,
    ) -> AsyncGenerator[AnyFrame | UnknownFrame, None]:
        """The job's frames until its terminal frame, across reconnects, exactly once each.
        Frames of a type this version does not know are skipped unless ``unknown=True``."""
        return Subscription(self, job_id, since, raise_on_failure, unknown=unknown).frames()

    def subscribe_many(
        self, job_ids: Sequence[str], *, raise_on_failure: bool = False
    ) -> AsyncGenerator[AnyFrame, None]:
        """Frames of several jobs over ONE multiplexed socket, until every job has ended."""
        return follow_many(self, list(job_ids), raise_on_failure)

    async def download(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        progress: DownloadProgress | None = None,
    ) -> Path:
        """Stream the bundle to ``path`` through ``path.part``: a download cut off (here, or
        in an earlier run) resumes with Range from the bytes already on disk."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        url = self.absolute_url((await self.result(job_id)).download_url)
        for attempt in range(self.retries + 1):
            try:
                await self._download_to(url, partial, progress)
                break
            except (ConnectionFailed, Timeout):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self.backoff.delay(attempt))
        partial.replace(target)
        return target

    async def _download_to(
        self, url: str, partial: Path, progress: DownloadProgress | None
    ) -> None:
        offset = _size_on_disk(partial)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 416:  # the part file already holds every byte
                    return
                if response.status_code >= 400:
                    raise HTTPError(response.status_code, await response.aread())
                resumed = response.status_code == 206
                done = offset if resumed else 0
                total = _total_size(response, done)
                with partial.open("ab" if resumed else "wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
        except httpx.TimeoutException as exc:
            raise Timeout(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(str(exc)) from exc

    # --- plumbing ------------------------------------------------------------------------

    def absolute_url(self, url: str) -> str:
        """A link the server gave (download URLs are root-relative) as an absolute URL."""
        return self.absolute_url_for(self.base_url, url)

    @staticmethod
    def absolute_url_for(base_url: str, url: str) -> str:
        return urljoin(base_url.rstrip("/") + "/", url)

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url.removeprefix("http") + path

    def report(self, change: StateChange) -> None:
        if self.on_state is not None:
            self.on_state(change)

    async def _request(
        self, method: str, path: str, type_: type[T], *, retry: bool = False, **kwargs: Any
    ) -> T:
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                response = await self.send(method, path, **kwargs)
                return msgspec.json.decode(response.content, type=type_)
            except (ConnectionFailed, Timeout, HTTPError) as exc:
                if attempt + 1 == attempts or not _worth_retrying(exc):
                    raise
                await asyncio.sleep(self.backoff.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request with the SDK's error mapping; a 401 with a refreshable token
        asks for a fresh one and tries once more."""
        response = await self._send(method, path, fresh=False, **kwargs)
        if response.status_code == 401 and self.credentials.refreshable:
            response = await self._send(method, path, fresh=True, **kwargs)
        if response.status_code >= 400:
            raise _http_error(response, path)
        return response

    async def _send(self, method: str, path: str, *, fresh: bool, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **await self.credentials.headers(fresh=fresh)}
        try:
            return await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(f"{method} {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc}") from exc

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http


def _size_on_disk(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _worth_retrying(exc: DelineateError) -> bool:
    if isinstance(exc, HTTPError):
        return exc.status in RETRY_STATUSES
    return True


def _total_size(response: httpx.Response, offset: int) -> int | None:
    """The whole file's size: from Content-Range on a 206, else Content-Length."""
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("content-length")
    return offset + int(length) if length is not None else None


def _http_error(response: httpx.Response, path: str) -> HTTPError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_for(response.status_code, body, path)


def error_for(status: int, body: Any, path: str) -> HTTPError:
    if status == 401:
        return Unauthorized(401, body)
    if status == 404 and "/v1/download/" in path:
        return JobNotFound(404, body)
    return HTTPError(status, body)

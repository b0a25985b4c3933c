"""``AsyncClient``: the job API over httpx, and ``subscribe()`` over WebSocket, SSE or polling.

    async with AsyncClient("http://127.0.0.1:3000") as client:
        job = await client.initiate([70000, 70007])
        async for frame in client.subscribe(job.job_id):
            print(frame.seq, type(frame).__name__)
        await client.download(job.job_id, "bundle.zip")

Frames are the server's own msgspec types (``server.frames``), so nothing is parsed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx
import msgspec

from client_sdk.backoff import Backoff
from client_sdk.errors import ConnectionFailed, HTTPError, JobNotFound, Timeout, Unauthorized
from client_sdk.subscription import Subscription, follow_many
from server.api.schemas import InitiateResponse, ResultResponse
from server.frames import AnyFrame, JobSnapshot

T = TypeVar("T")
Job = InitiateResponse


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        transports: Sequence[str] = ("websocket", "sse", "polling"),
        poll_interval: float = 1.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = http or httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=self.auth_headers()
        )
        self.backoff = backoff or Backoff()
        self.transports = tuple(transports)
        self.poll_interval = poll_interval

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the job API -------------------------------------------------------------------

    async def initiate(self, file_ids: Sequence[int], idempotency_key: str | None = None) -> Job:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"file_ids": list(file_ids)}
        return await self._request("POST", "/v1/download/initiate", Job, json=body, headers=headers)

    async def status(self, job_id: str) -> JobSnapshot:
        return await self._request("GET", f"/v1/download/status/{job_id}", JobSnapshot)

    async def result(self, job_id: str) -> ResultResponse:
        return await self._request("GET", f"/v1/download/result/{job_id}", ResultResponse)

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

    def subscribe(
        self, job_id: str, since: int | None = None, *, raise_on_failure: bool = False
    ) -> AsyncGenerator[AnyFrame, None]:
        """The job's frames until its terminal frame, across reconnects, exactly once each."""
        return Subscription(self, job_id, since, raise_on_failure).frames()

    def subscribe_many(
        self, job_ids: Sequence[str], *, raise_on_failure: bool = False
    ) -> AsyncGenerator[AnyFrame, None]:
        """Frames of several jobs over ONE multiplexed socket, until every job has ended."""
        return follow_many(self, list(job_ids), raise_on_failure)

    async def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Stream the bundle to ``path``; an interrupted download resumes with Range."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        url = urljoin(self.base_url + "/", (await self.result(job_id)).download_url)
        offset = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    raise HTTPError(response.status_code, await response.aread())
                mode = "ab" if response.status_code == 206 else "wb"
                with partial.open(mode) as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
        except httpx.TimeoutException as exc:
            raise Timeout(str(exc)) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(str(exc)) from exc
        partial.replace(target)
        return target

    # --- plumbing ------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url.removeprefix("http") + path

    async def _request(self, method: str, path: str, type_: type[T], **kwargs: Any) -> T:
        response = await self.send(method, path, **kwargs)
        return msgspec.json.decode(response.content, type=type_)

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request with the SDK's error mapping."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(f"{method} {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc}") from exc
        if response.status_code >= 400:
            raise _http_error(response, path)
        return response

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http


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

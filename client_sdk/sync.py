"""``Client``: the synchronous twin of ``AsyncClient``, for scripts.

It owns one private event loop and runs the async client on it, so both clients share one
implementation (and one set of tests of behaviour).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from client_sdk.client import AsyncClient, Job
from server.api.schemas import ResultResponse
from server.frames import AnyFrame, JobSnapshot

T = TypeVar("T")


class Client:
    def __init__(self, base_url: str, token: str | None = None, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._async = self._runner.run(_make(base_url, token, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.run(self._async.aclose())
        self._runner.close()

    def initiate(self, file_ids: Sequence[int], idempotency_key: str | None = None) -> Job:
        return self._runner.run(self._async.initiate(file_ids, idempotency_key))

    def status(self, job_id: str) -> JobSnapshot:
        return self._runner.run(self._async.status(job_id))

    def result(self, job_id: str) -> ResultResponse:
        return self._runner.run(self._async.result(job_id))

    def cancel(self, job_id: str) -> JobSnapshot:
        return self._runner.run(self._async.cancel(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        return self._runner.run(self._async.wait(job_id, timeout))

    def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        return self._runner.run(self._async.download(job_id, path))

    def subscribe(
        self, job_id: str, since: int | None = None, *, raise_on_failure: bool = False
    ) -> Iterator[AnyFrame]:
        frames = self._async.subscribe(job_id, since, raise_on_failure=raise_on_failure)
        try:
            while True:
                try:
                    yield self._runner.run(_next(frames))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(frames.aclose())


async def _next(frames: AsyncIterator[AnyFrame]) -> AnyFrame:
    return await anext(frames)


async def _make(base_url: str, token: str | None, options: dict[str, Any]) -> AsyncClient:
    # httpx binds its connection pool to the loop that first uses it: build it on ours.
    return AsyncClient(base_url, token, **options)

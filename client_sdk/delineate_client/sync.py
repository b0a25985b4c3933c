"""``Client``: the synchronous twin of ``AsyncClient``, for scripts and notebooks.

It runs the async client on a private event loop in a thread of its own and waits for each
call, so both clients share one implementation, and ``Client`` works where an event loop is
already running in the caller's thread (a Jupyter cell). Token and state callbacks are called
from that thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from delineate_client.auth import TokenSource
from delineate_client.client import AsyncClient, DownloadProgress, Job
from delineate_protocol.frames import AnyFrame, JobSnapshot
from delineate_protocol.schemas import ResultResponse

T = TypeVar("T")


class Client:
    def __init__(self, base_url: str, token: TokenSource | None = None, **options: Any) -> None:
        """The same arguments as ``AsyncClient``."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="delineate-client", daemon=True
        )
        self._thread.start()
        # httpx binds its connection pool to the loop that first uses it: build it on ours.
        self._async = self._run(_make(base_url, token, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def initiate(self, file_ids: Sequence[int], idempotency_key: str | None = None) -> Job:
        return self._run(self._async.initiate(file_ids, idempotency_key))

    def status(self, job_id: str) -> JobSnapshot:
        return self._run(self._async.status(job_id))

    def result(self, job_id: str) -> ResultResponse:
        return self._run(self._async.result(job_id))

    def cancel(self, job_id: str) -> JobSnapshot:
        return self._run(self._async.cancel(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        return self._run(self._async.wait(job_id, timeout))

    def download(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        *,
        progress: DownloadProgress | None = None,
    ) -> Path:
        return self._run(self._async.download(job_id, path, progress=progress))

    def subscribe(
        self, job_id: str, since: int | str | None = None, *, raise_on_failure: bool = False
    ) -> Iterator[AnyFrame]:
        frames = self._async.subscribe(job_id, since, raise_on_failure=raise_on_failure)
        try:
            while True:
                try:
                    yield self._run(_next(frames))
                except StopAsyncIteration:
                    return
        finally:
            self._run(frames.aclose())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _next(frames: AsyncIterator[AnyFrame]) -> AnyFrame:
    return await anext(frames)


async def _make(base_url: str, token: TokenSource | None, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, token, **options)

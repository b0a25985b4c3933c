"""An event stream in the real app, in a real uvicorn in this process: what it holds while
open, and how it ends on a drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from delineate.settings import Settings
from tests.support.inprocess import running_app

STREAMS = 20


def code_file(task: asyncio.Task[Any]) -> str:
    code = getattr(task.get_coro(), "cr_code", None)
    return "" if code is None else code.co_filename


async def first_event(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        if line.startswith("event:"):
            return


async def test_an_open_stream_is_its_request_task_alone_and_a_drain_ends_it(
    tmp_path: Path,
) -> None:
    """While open, a stream is served by uvicorn's task for its request and nothing else (no
    writer while nothing waits, no task watching for the client, the drain or the request
    timeout): thousands of streams are open at once, and end together when jobs end. A
    drain then ends every stream's response, so each EventSource reconnects to another
    replica."""
    settings = Settings(
        data_dir=str(tmp_path), download_delay_min_ms=30000, download_delay_max_ms=30000
    )
    async with running_app(settings) as served, contextlib.AsyncExitStack() as streams:
        job_id = await served.initiate([70000])
        before = asyncio.all_tasks()
        bodies = []
        for _ in range(STREAMS):
            response = await streams.enter_async_context(
                served.http.stream("GET", f"/v1/download/stream/{job_id}")
            )
            assert response.status_code == 200
            lines = response.aiter_lines()
            await first_event(lines)  # the snapshot: the stream is being served
            bodies.append(lines)
        new = [t for t in asyncio.all_tasks() - before if not t.done()]
        files = sorted(Path(code_file(t)).name for t in new)
        assert files == ["httptools_impl.py"] * STREAMS, files

        served.services.draining.set()
        async with asyncio.timeout(10):
            rest = await asyncio.gather(*(read_to_end(lines) for lines in bodies))
        assert all("event: completed" not in "".join(lines) for lines in rest)
        assert len(served.services.draining) == 0
        await wait_for_requests_to_end(before)


async def read_to_end(lines: AsyncIterator[str]) -> list[str]:
    """The rest of a response body; returns once the server ended it cleanly (a reset
    would raise here)."""
    return [line async for line in lines]


async def wait_for_requests_to_end(before: set[asyncio.Task[Any]]) -> None:
    async with asyncio.timeout(5):
        while [  # noqa: ASYNC110 (uvicorn offers nothing to wait on)
            t
            for t in asyncio.all_tasks() - before
            if not t.done() and code_file(t).endswith("httptools_impl.py")
        ]:
            await asyncio.sleep(0.02)


async def test_a_replay_too_long_for_the_outbox_ends_the_stream(tmp_path: Path) -> None:
    """A replay that overflows the outbox before the stream starts (here: more non-progress
    frames than its hard limit; in production, the hub abandoning a watch it cannot bring up
    to date): the stream ends at once, as any slow consumer's does. It used to stay open,
    silent, holding its slot until the client gave up."""
    settings = Settings(
        data_dir=str(tmp_path), download_delay_min_ms=0, download_delay_max_ms=0, outbox_limit=8
    )
    async with running_app(settings) as served:
        # 40 files: 40 file frames (most are unavailable, which is a frame too).
        job_id = await served.initiate([70000 + 7 * i for i in range(40)])
        async with asyncio.timeout(20):
            status = f"/v1/download/status/{job_id}"
            while (await served.http.get(status)).json()["status"] != "completed":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            url = f"/v1/download/stream/{job_id}"
            async with served.http.stream("GET", url, headers={"Last-Event-ID": "0"}) as response:
                assert response.status_code == 200
                lines = await read_to_end(response.aiter_lines())
        assert "event: completed" not in lines  # the outbox gave up on the replay

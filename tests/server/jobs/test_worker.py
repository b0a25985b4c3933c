"""The worker's hold on a queue entry, on a real redis-server: the app in a real uvicorn in
this process, so the test can reach into its journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from delineate.journal.fencing import WriteMode
from delineate.redis.pipe import RedisPipe
from delineate.settings import Settings
from tests.support.inprocess import running_app
from tests.support.services import RedisServer


async def test_an_attempt_that_crashes_on_an_unexpected_error_is_run_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """An error nobody planned for (here: the claim's write raises RuntimeError once) ends the
    attempt like a crash: its queue entry is not acked but lapses, and the job runs again
    and completes, instead of staying queued for good."""
    settings = Settings(
        redis_url=redis_server.url, data_dir=str(tmp_path), job_lease_ms=600,
        download_delay_min_ms=100, download_delay_max_ms=100,
    )  # fmt: skip
    async with running_app(settings) as served:
        journal = served.services.jobs._journal
        original = journal.append_many
        crashes = 0

        async def crash_once(record: Any, builds: Any, **kwargs: Any) -> Any:
            nonlocal crashes
            if kwargs.get("mode") is WriteMode.CLAIM and not crashes:
                crashes += 1
                raise RuntimeError("a bug nobody planned for")
            return await original(record, builds, **kwargs)

        journal.append_many = crash_once
        job_id = await served.initiate([70000])
        async with asyncio.timeout(30):
            while True:
                status = (await served.http.get(f"/v1/download/status/{job_id}")).json()
                if status["status"] == "completed":
                    break
                await asyncio.sleep(0.1)
    assert crashes == 1


@pytest.mark.parametrize("behind", ["store", "journal"])
async def test_a_job_a_stale_read_misses_is_run_again_not_dropped(
    redis_server: RedisServer, tmp_path: Path, behind: str
) -> None:
    """After a Sentinel failover the old primary, back from its own files, answers until
    the sentinels demote it, and it lacks the jobs created since. A worker whose read of a
    taken job (store) or whose claim (journal) lands there finds no job: the job's queue
    entry must not be dropped (the job would stay queued for good) but left to lapse, and
    the job runs. Here that pipe is on a second, empty redis-server until a call went there."""
    stale = RedisServer(tmp_path, name="redis-deposed")
    stale.start()
    deposed_pool = aioredis.ConnectionPool.from_url(stale.url)
    stale_pipe = RedisPipe(deposed_pool)
    try:
        settings = Settings(
            redis_url=redis_server.url, data_dir=str(tmp_path), job_lease_ms=600,
            download_delay_min_ms=100, download_delay_max_ms=100,
        )  # fmt: skip
        async with running_app(settings) as served:
            store: Any = served.services.store
            holder: Any = store if behind == "store" else served.services.jobs._journal
            primary_pipe, holder._pipe = holder._pipe, stale_pipe
            job_id = await served.initiate([70000])
            async with aioredis.Redis.from_url(stale.url) as deposed, asyncio.timeout(20):
                # Until the worker's read or claim missed the job there.
                while not (await deposed.info("commandstats")).keys() & CALLS:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            # The sentinels demoted it: the next call finds the new primary. The stale
            # pipe stays open until the end: the worker may not have read the miss's
            # reply yet, and a closed connection would be retried on the primary instead.
            holder._pipe = primary_pipe
            final = None
            async with asyncio.timeout(15):
                while final is None or not final.job.status.is_terminal:
                    await asyncio.sleep(0.1)
                    final = await store.get(job_id)
    finally:
        await stale_pipe.aclose()
        await deposed_pool.disconnect()
        stale.stop()
    assert final is not None
    assert final.job.status.value == "completed"
    assert store.stale_reads >= 1


CALLS = {"cmdstat_hget", "cmdstat_evalsha", "cmdstat_eval"}

"""The worker's hold on a queue entry, on a real redis-server: the app in a real uvicorn in
this process, so the test can reach into its journal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from delineate.journal.fencing import WriteMode
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

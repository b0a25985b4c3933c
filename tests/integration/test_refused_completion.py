"""An attempt whose completed frame is refused (another attempt owns the job, or a cancel
from another replica was written first) leaves no bundle behind. Found by the chaos checker
(tests/chaos): a stale attempt's ``exports/<id>.1.zip`` stayed beside the winner's, and a
job cancelled with 200 kept its bundle."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Cluster
from tests.integration.test_guarantees import job_bundles, paused, poll, settled
from tests.support.clients import initiate
from tests.support.proxy import ReplyGate
from tests.support.services import Backend

pytestmark = pytest.mark.integration


async def test_a_stale_attempt_refused_at_its_completed_frame_deletes_its_bundle(
    cluster: Cluster, redis_backend: Backend
) -> None:
    """Replica A's attempt uploads its bundle through a gate that holds S3's replies, so it
    waits there with every frame but the completed one written; A is then paused past its
    lease and B completes the job. When A resumes, its upload lands and its completed frame
    is refused: A deletes its own bundle, and only B's stays."""
    assert redis_backend.s3 is not None
    async with ReplyGate(int(redis_backend.s3.endpoint.rpartition(":")[2])) as gate:
        slow = {
            "JOB_LEASE_MS": "1500",
            "DOWNLOAD_DELAY_MIN_MS": "1500",
            "DOWNLOAD_DELAY_MAX_MS": "1500",
            "STORAGE_TIMEOUT_S": "60",
        }
        # Started from a thread: the gate relays on this loop while the replica starts.
        gated = {**slow, "S3_ENDPOINT": f"http://127.0.0.1:{gate.port}"}
        [a] = await asyncio.to_thread(cluster, 1, **gated)
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
            job_id = (await initiate(http, [70021]))["jobId"]
            await poll(
                lambda: http.get(f"/v1/download/status/{job_id}"),
                lambda r: r.json()["progress"] > 0,
            )
            gate.hold()  # the source is read; the bundle's upload will wait for its answer
            await poll(
                lambda: http.get(f"/v1/download/status/{job_id}"),
                lambda r: r.json()["progress"] >= 100,
            )
            await asyncio.sleep(0.5)
        with paused(a):
            [b] = await asyncio.to_thread(cluster, 1, **slow)
            async with httpx.AsyncClient(base_url=b.url, timeout=10) as http:
                done = await settled(http, job_id, timeout=40)
            assert (done["status"], done["worker"]) == ("completed", b.name)
        gate.release()
        await poll(
            lambda: asyncio.sleep(0.2, a.log()), lambda log: f"{job_id}: attempt 1 stops" in log
        )
        await asyncio.sleep(1)
    assert job_bundles(redis_backend, job_id) == [f"exports/{job_id}.2.zip"]

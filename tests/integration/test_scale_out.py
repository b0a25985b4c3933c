"""Several replicas acting as one service through real Redis and a real S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from delineate.storage import demo
from delineate.storage.keys import source_key
from delineate_client import AsyncClient, Backoff
from delineate_protocol.frames import SnapshotFrame
from tests.conftest import Cluster, EdgeFactory
from tests.support.clients import (
    AVAILABLE,
    assert_strictly_increasing,
    initiate,
    seqs,
    sse_events,
    wait_status,
    ws_collect,
)
from tests.support.processes import Replica
from tests.support.services import Backend, SeaweedS3, wait_serving

pytestmark = pytest.mark.integration


def frame_keys(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(f["seq"], f["type"]) for f in frames]


async def test_job_on_a_is_seen_identically_on_b_and_c(cluster: Cluster) -> None:
    """Initiated on A, followed over WS on B and SSE on C: the same frames in the same order."""
    a, b, c = cluster(3)
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http_a:
        job = await initiate(http_a, AVAILABLE)
    job_id = job["jobId"]
    async with httpx.AsyncClient(base_url=c.url, timeout=30) as http_c:
        over_ws, (over_sse, _) = await asyncio.gather(
            ws_collect(f"{b.ws_url}/v1/download/subscribe/{job_id}?since=0"),
            sse_events(http_c, f"/v1/download/stream/{job_id}", headers={"Last-Event-ID": "0"}),
        )
    sse_frames = [e["data"] for e in over_sse]
    assert over_ws.frames == sse_frames
    assert over_ws.frames[0]["seq"] == 1
    assert over_ws.frames[-1]["type"] == "completed"
    assert_strictly_increasing(seqs(over_ws.frames))


async def test_killed_replica_job_finishes_elsewhere_and_watchers_resume(
    cluster: Cluster, redis_backend: Backend
) -> None:
    """kill -9 the replica running a job: another takes it over after the lease; a watcher
    that reconnects elsewhere with its last seq sees every remaining frame exactly once."""
    replicas = cluster(
        3, JOB_LEASE_MS="1500", DOWNLOAD_DELAY_MIN_MS="4000", DOWNLOAD_DELAY_MAX_MS="4000"
    )
    by_id = {r.name: r for r in replicas}
    async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as http:
        job = await initiate(http, AVAILABLE)
        running = await wait_status(http, job["jobId"], {"processing"})
    victim = by_id[running["worker"]]
    seen: list[dict[str, Any]] = []
    async with connect(f"{victim.ws_url}/v1/download/subscribe/{job['jobId']}") as ws:
        while len(seen) < 5:
            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        victim.kill()
        with pytest.raises(ConnectionClosed):
            await drain_until_closed(ws, seen)
    survivor = next(r for r in replicas if r is not victim)
    last = seen[-1]["seq"]
    rest = await ws_collect(
        f"{survivor.ws_url}/v1/download/subscribe/{job['jobId']}?since={last}", timeout=40
    )
    combined = seen[1:] + rest.frames
    assert_strictly_increasing(seqs(combined))
    assert [f["type"] for f in combined].count("completed") == 1
    assert rest.frames[-1]["type"] == "completed"

    async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as http:
        done = (await http.get(f"/v1/download/status/{job['jobId']}")).json()
    assert done["status"] == "completed"
    assert done["attempt"] >= 2
    assert done["worker"] != victim.name
    # only the attempt that completed keeps a bundle
    (bundle,) = [k for k in redis_backend.bundle_keys() if job["jobId"] in k]
    archive = zipfile.ZipFile(io.BytesIO(redis_backend.read_object(bundle)))
    assert archive.testzip() is None
    assert {n: archive.read(n) for n in archive.namelist()} == {
        f"{i}.zip": demo.content(i) for i in AVAILABLE
    }


async def test_redis_restart_while_jobs_run(cluster: Cluster, redis_backend: Backend) -> None:
    """Restart redis-server mid-job: no replica dies, listeners resubscribe, and every watcher
    ends with the true terminal state."""
    a, b = cluster(2, DOWNLOAD_DELAY_MIN_MS="3000", DOWNLOAD_DELAY_MAX_MS="3000")
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        jobs = [await initiate(http, [file_id]) for file_id in AVAILABLE]
        await wait_status(http, jobs[0]["jobId"], {"processing"})
    watchers = [
        asyncio.ensure_future(
            ws_collect(f"{r.ws_url}/v1/download/subscribe/{j['jobId']}", timeout=60)
        )
        for j in jobs
        for r in (a, b)
    ]
    await asyncio.sleep(0.8)
    assert redis_backend.redis is not None
    redis_backend.redis.stop()
    await asyncio.sleep(1.0)
    redis_backend.redis.start()
    results = await asyncio.gather(*watchers)
    for result in results:
        assert result.frames[-1]["type"] == "completed", frame_keys(result.frames)[-3:]
        assert result.close_code == 1000
    assert a.alive
    assert b.alive
    async with httpx.AsyncClient(base_url=b.url, timeout=10) as http:
        for job in jobs:
            status = (await http.get(f"/v1/download/status/{job['jobId']}")).json()
            assert status["status"] == "completed"
        health = await http.get("/health")
    assert health.json()["checks"]["redis"] == "ok"


async def test_s3_outage_is_reported_retried_then_recovered(
    tmp_path: Path, redis_backend: Backend, cluster: Cluster
) -> None:
    """S3 down: /health says so promptly; jobs retry then fail clearly; S3 back: jobs work."""
    own_s3 = SeaweedS3(tmp_path / "own-s3")
    own_s3.start()
    try:
        redis_backend.s3 = own_s3
        redis_backend.seed([70000])
        (replica,) = cluster(
            1, JOB_MAX_ATTEMPTS="2", JOB_RETRY_BASE_MS="100", STORAGE_TIMEOUT_S="1",
            DOWNLOAD_DELAY_MIN_MS="0", DOWNLOAD_DELAY_MAX_MS="0",
        )  # fmt: skip
        async with httpx.AsyncClient(base_url=replica.url, timeout=15) as http:
            assert (await http.get("/health")).status_code == 200
            own_s3.stop()
            health = await http.get("/health")
            assert health.status_code == 503
            assert health.json()["checks"] == {"storage": "error", "redis": "ok", "queue": "ok"}
            failing = await initiate(http, [70000])
            failed = await wait_status(http, failing["jobId"], {"failed", "completed"}, 30)
            assert failed["status"] == "failed"
            assert failed["error"]["code"] == "storage_unavailable"
            assert failed["attempt"] == 2
            own_s3.start()
            await asyncio.to_thread(wait_serving, own_s3, redis_backend.bucket, source_key(70000))
            await wait_health(http)
            working = await initiate(http, [70000])
            done = await wait_status(http, working["jobId"], {"failed", "completed"}, 30)
        assert done["status"] == "completed"
    finally:
        own_s3.stop()


async def wait_health(http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(20):
        while (await http.get("/health")).status_code != 200:  # noqa: ASYNC110 (polling a server)
            await asyncio.sleep(0.2)


async def drain_until_closed(ws: ClientConnection, seen: list[dict[str, Any]]) -> None:
    async with asyncio.timeout(10):
        while True:
            seen.append(json.loads(await ws.recv()))


async def test_bundle_larger_than_several_parts(cluster: Cluster, redis_backend: Backend) -> None:
    """A ~21 MiB bundle goes up in 5 MiB parts and every entry matches its source's checksum."""
    ids = [70035, 70042, 70049]
    redis_backend.seed(ids, size=7 * 1024 * 1024)
    (replica,) = cluster(1, S3_PART_SIZE_MB="5", DOWNLOAD_DELAY_ENABLED="false")
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        job = await initiate(http, ids)
        done = await wait_status(http, job["jobId"], {"completed", "failed"}, 60)
        assert done["status"] == "completed"
        result = (await http.get(f"/v1/download/result/{job['jobId']}")).json()
        bundle = (await http.get(result["downloadUrl"])).content
    assert len(bundle) == result["size"] > 3 * 5 * 1024 * 1024
    archive = zipfile.ZipFile(io.BytesIO(bundle))
    for file_id in ids:
        source = redis_backend.read_object(f"downloads/{file_id}.zip")
        entry = archive.read(f"{file_id}.zip")
        assert hashlib.sha256(entry).hexdigest() == hashlib.sha256(source).hexdigest()


async def test_two_hundred_subscribers_over_three_replicas(cluster: Cluster) -> None:
    """200 sockets on 20 jobs across 3 replicas: each gets every frame of its job, in order."""
    replicas = cluster(3, DOWNLOAD_DELAY_MIN_MS="1500", DOWNLOAD_DELAY_MAX_MS="2500")
    async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as http:
        jobs = [await initiate(http, [AVAILABLE[i % 3]]) for i in range(20)]
    watchers = [
        ws_collect(
            f"{replicas[i % 3].ws_url}/v1/download/subscribe/{jobs[i % 20]['jobId']}?since=0",
            timeout=60,
        )
        for i in range(200)
    ]
    results = await asyncio.gather(*watchers)
    by_job: dict[str, list[list[tuple[int, str]]]] = {}
    for result in results:
        assert result.frames[-1]["type"] == "completed", result.frames[-1]
        assert result.frames[0]["seq"] == 1
        assert_strictly_increasing(seqs(result.frames))
        by_job.setdefault(result.frames[0]["jobId"], []).append(frame_keys(result.frames))
    assert len(by_job) == 20
    for views in by_job.values():
        assert len(views) == 10
        assert all(view == views[0] for view in views)


async def test_cancel_and_idempotency_work_from_any_replica(cluster: Cluster) -> None:
    """A retry with the same key on another replica gets the same job; cancel on B stops a job
    running on A."""
    a, b = cluster(2, DOWNLOAD_DELAY_MIN_MS="20000", DOWNLOAD_DELAY_MAX_MS="20000")
    headers = {"Idempotency-Key": "scale-out-key"}
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
    ):
        first = await initiate(http_a, AVAILABLE, **headers)
        retry = await initiate(http_b, AVAILABLE, **headers)
        assert retry["jobId"] == first["jobId"]
        running = await wait_status(http_a, first["jobId"], {"processing"})
        other = http_b if running["worker"] == a.name else http_a
        cancelled = await other.post(f"/v1/download/cancel/{first['jobId']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        frames = await ws_collect(f"{a.ws_url}/v1/download/subscribe/{first['jobId']}?since=0")
    assert frames.frames[-1]["type"] == "cancelled"
    assert [f["type"] for f in frames.frames].count("cancelled") == 1


async def test_a_replica_reads_the_queue_once_and_only_into_a_free_slot(
    cluster: Cluster, redis_backend: Backend
) -> None:
    """However many slots, an idle replica has one blocked read on the queue (not one per
    slot), and never runs more jobs than it has slots; the rest wait queued and all finish."""
    a, b = cluster(
        2, JOB_CONCURRENCY="3", DOWNLOAD_DELAY_MIN_MS="1500", DOWNLOAD_DELAY_MAX_MS="1500"
    )
    assert redis_backend.redis is not None
    redis = aioredis.Redis.from_url(redis_backend.redis.url)
    try:
        blocked = []
        for _ in range(10):
            blocked.append((await redis.info("clients"))["blocked_clients"])
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    assert max(blocked) == 2, blocked  # one per replica
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
    ):
        clients = [http_a, http_b]
        jobs = [(await initiate(clients[i % 2], [70000]))["jobId"] for i in range(10)]
        for job_id in jobs:
            await wait_status(http_a, job_id, {"completed"}, timeout=60)
        views = [(await http_a.get(f"/v1/download/status/{j}")).json() for j in jobs]
    # Jobs running at once on a replica, from each job's own start and finish times (a sweep
    # of status requests is not one instant: it can see a job end and the next start).
    most: dict[str, int] = {}
    for view in views:
        same = [v for v in views if v["worker"] == view["worker"]]
        at_start = sum(v["startedAt"] <= view["startedAt"] < v["finishedAt"] for v in same)
        most[view["worker"]] = max(most.get(view["worker"], 0), at_start)
    assert set(most) == {a.name, b.name}
    assert max(most.values()) <= 3, most


async def test_sigterm_drains_the_replica_and_the_job_moves_on(
    cluster: Cluster, edge_factory: EdgeFactory
) -> None:
    """SIGTERM: the replica ends its streams and hands its job back at once (no lease wait);
    another replica finishes it; watchers through nginx see every frame once."""
    replicas = cluster(
        2, JOB_LEASE_MS="60000", DOWNLOAD_DELAY_MIN_MS="5000", DOWNLOAD_DELAY_MAX_MS="5000"
    )
    proxy = edge_factory(replicas)
    async with AsyncClient(proxy.url, backoff=Backoff(base=0.05, cap=0.5)) as client:
        job = await client.initiate(AVAILABLE)
        watchers = [
            asyncio.ensure_future(_collect(client, job.job_id, transports))
            for transports in (("websocket",), ("sse",), ("websocket",), ("sse",))
        ]
        running = await client.status(job.job_id)
        while running.worker is None:
            running = await client.status(job.job_id)
        victim = next(r for r in replicas if r.name == running.worker)
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.to_thread(victim.stop)  # SIGTERM, then wait for the exit
        stopped_in = time.monotonic() - started
        results = await asyncio.wait_for(asyncio.gather(*watchers), 40)
        final = await client.status(job.job_id)
    assert stopped_in < 5  # streams did not hold the shutdown for the 10 s grace period
    assert final.status.value == "completed"
    assert final.worker != victim.name  # continued at once, not after the 60 s lease
    for frames in results:
        assert_strictly_increasing([f.seq for f in frames])
        assert [type(f).__name__ for f in frames].count("CompletedFrame") == 1


async def _collect(client: AsyncClient, job_id: str, transports: tuple[str, ...]) -> list[Any]:
    from delineate_client.subscription import Subscription

    sub = Subscription(client, job_id, None, False, transports)
    return [frame async for frame in sub.frames()]


async def test_rolling_restart_loses_no_job_and_no_frame(
    cluster: Cluster, edge_factory: EdgeFactory, redis_backend: Backend
) -> None:
    """Restart every replica in turn (SIGTERM, then a new process on the same port) while 50
    jobs run and 500 clients watch through nginx: every client gets every frame once."""
    env = {"JOB_LEASE_MS": "3000", "DOWNLOAD_DELAY_MIN_MS": "6000", "DOWNLOAD_DELAY_MAX_MS": "8000",
           "MAX_SOCKETS_PER_IP": "5000"}  # fmt: skip
    replicas = cluster(3, **env)
    proxy = edge_factory(replicas, conn_per_ip=5000)  # all 500 clients share one address here
    restarted: list[Replica] = []
    try:
        async with AsyncClient(proxy.url, backoff=Backoff(base=0.1, cap=1.0)) as client:
            jobs = [await client.initiate([AVAILABLE[i % 3]]) for i in range(50)]
            watchers = [
                asyncio.ensure_future(_collect(client, jobs[i % 50].job_id, ("websocket", "sse")))
                for i in range(500)
            ]
            await asyncio.sleep(1.5)
            for old in replicas:
                await asyncio.to_thread(old.stop)
                fresh = Replica(f"{old.name}-again", {**redis_backend.env(), **env},
                                redis_backend.tmp, port=old.port)  # fmt: skip
                restarted.append(fresh)
                await asyncio.to_thread(fresh.start)
            results = await asyncio.wait_for(asyncio.gather(*watchers), 90)
            finals = [await client.status(job.job_id) for job in jobs]
    finally:
        for fresh in restarted:
            fresh.stop()
    assert {f.status.value for f in finals} == {"completed"}
    late = 0
    for frames in results:
        assert_strictly_increasing([f.seq for f in frames])
        if len(frames) == 1 and isinstance(frames[0], SnapshotFrame):
            # Its first connection came after its job ended (the replicas were restarting):
            # the snapshot of the completed job is its whole story.
            assert frames[0].job.status.value == "completed"
            late += 1
            continue
        assert [type(f).__name__ for f in frames].count("CompletedFrame") == 1
        assert type(frames[-1]).__name__ == "CompletedFrame"
    assert late < len(results) // 5, late  # most watchers followed their job live

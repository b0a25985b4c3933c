"""The promises under races and faults, against real processes: one terminal state with only
its winner's side effects, fenced workers, one job per (owner, Idempotency-Key), and a Redis
that comes back empty ending lost jobs for their watchers instead of leaving them hanging."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import Cluster, ReplicaFactory
from tests.integration.test_auth import AUTH_ENV
from tests.support.clients import assert_strictly_increasing, initiate, seqs, sse_events, ws_collect
from tests.support.processes import Replica
from tests.support.services import Backend, SeaweedS3

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "cancelled"}
T = TypeVar("T")


def job_bundles(backend: Backend, job_id: str) -> list[str]:
    return [key for key in backend.bundle_keys() if job_id in key]


async def poll(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 30
) -> T:
    """``probe()`` again and again until ``done`` says yes (or the timeout fails the test)."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            value = await probe()
            if done(value):
                return value
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def settled(http: httpx.AsyncClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    async def status() -> dict[str, Any]:
        return dict((await http.get(f"/v1/download/status/{job_id}")).json())

    return await poll(status, lambda job: job["status"] in TERMINAL, timeout)


async def test_a_cancel_racing_completion_has_one_winner_and_only_its_side_effects(
    backend: Backend, replica_factory: ReplicaFactory
) -> None:
    """Cancels timed around the end of short jobs: a cancel that wins answers 200 and leaves
    no bundle; one that loses answers 409 with the final state and deletes nothing (the
    completed job's link works). Never 200 for a job that stays completed."""
    replica = replica_factory(
        DOWNLOAD_DELAY_MIN_MS="150", DOWNLOAD_DELAY_MAX_MS="250", JOB_CONCURRENCY="16"
    )
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")

    # Where the end of a job falls depends on the machine, so the cancels' window moves
    # until both sides of the race have been run (a slow Cluster pushes it later).
    window_start = 0.1

    async def race(http: httpx.AsyncClient) -> tuple[str, httpx.Response]:
        job = await initiate(http, [70000])
        await asyncio.sleep(window_start + rng.uniform(0, 0.35))
        return job["jobId"], await http.post(f"/v1/download/cancel/{job['jobId']}")

    outcomes = {"cancelled": 0, "completed": 0}
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        for _ in range(12):
            races = await asyncio.gather(*(race(http) for _ in range(8)))
            for job_id, answer in races:
                final = await settled(http, job_id)
                outcomes[final["status"]] += 1
                if final["status"] == "cancelled":
                    assert answer.status_code == 200, (job_id, answer.text)
                    assert answer.json()["status"] == "cancelled"
                    assert job_bundles(backend, job_id) == []
                else:
                    assert final["status"] == "completed"
                    assert answer.status_code == 409, (job_id, answer.text)
                    assert "completed" in answer.json()["message"]
                    assert len(job_bundles(backend, job_id)) == 1
                    link = (await http.get(f"/v1/download/result/{job_id}")).json()["downloadUrl"]
                    assert (await http.get(link)).status_code == 200
            if sum(outcomes.values()) >= 40 and min(outcomes.values()) > 0:
                break
            if outcomes["completed"] == 0:
                window_start += 0.2
            elif outcomes["cancelled"] == 0:
                window_start = max(0.0, window_start - 0.1)
    assert outcomes["cancelled"] > 0, outcomes  # both sides of the race were run
    assert outcomes["completed"] > 0, outcomes


@contextlib.contextmanager
def paused(replica: Replica) -> Iterator[None]:
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(replica.pid, signal.SIGCONT)


async def test_a_worker_paused_past_its_lease_is_fenced_off(
    cluster: Cluster, redis_backend: Backend
) -> None:
    """SIGSTOP the replica running a job past its lease: the other replica takes the job
    over, in a new epoch, and completes it. A watcher on the other replica is moved to that
    epoch by a recovered=false snapshot and sees one terminal frame. On SIGCONT the stale
    attempt is refused at its next write: the job stays completed, a replay holds its end
    and nothing after it, and only the completed attempt's bundle exists."""
    replicas = cluster(
        2, JOB_LEASE_MS="1500", DOWNLOAD_DELAY_MIN_MS="3000", DOWNLOAD_DELAY_MAX_MS="3000"
    )
    by_name = {r.name: r for r in replicas}
    async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as http:
        job_id = (await initiate(http, [70000, 70007]))["jobId"]
        status = await poll(
            lambda: http.get(f"/v1/download/status/{job_id}"), lambda r: r.json()["progress"] >= 5
        )
    victim = by_name[status.json()["worker"]]
    other = next(r for r in replicas if r is not victim)
    watch = asyncio.ensure_future(
        ws_collect(f"{other.ws_url}/v1/download/subscribe/{job_id}", timeout=60)
    )
    async with httpx.AsyncClient(base_url=other.url, timeout=10) as http:
        with paused(victim):
            done = await settled(http, job_id, timeout=40)
            assert done["status"] == "completed"
            assert done["worker"] == other.name
        await asyncio.sleep(4)  # the stale attempt wakes and writes into its fence
        after = (await http.get(f"/v1/download/status/{job_id}")).json()
    assert (after["status"], after["seq"], after["epoch"]) == (
        "completed",
        done["seq"],
        done["epoch"],
    )
    live = (await watch).frames
    moved = [f for f in live if f["type"] == "snapshot" and not f["recovered"]]
    assert [f["epoch"] for f in moved] == [done["epoch"]], live
    after_move = live[live.index(moved[0]) :]
    assert [f["type"] for f in after_move].count("completed") == 1
    assert (live[-1]["type"], live[-1]["epoch"]) == ("completed", done["epoch"])
    assert_strictly_increasing(seqs(after_move))
    for replica in replicas:
        replay = await ws_collect(f"{replica.ws_url}/v1/download/subscribe/{job_id}?since=0")
        end = replay.frames[-1]
        ended = end["type"] == "completed" or end.get("job", {}).get("status") == "completed"
        assert ended, replay.frames
        assert end["epoch"] == done["epoch"], replay.frames
        assert [f["type"] for f in replay.frames].count("completed") <= 1
        assert_strictly_increasing(seqs(replay.frames))
    assert len(job_bundles(redis_backend, job_id)) == 1
    assert "stops" in victim.log()  # the stale attempt met its fence


async def test_one_idempotency_key_makes_one_job_across_replicas(cluster: Cluster) -> None:
    """Fifty concurrent initiates with one key, spread over two replicas: one job, one
    request that created it, and 49 answers marked as replays."""
    a, b = cluster(2)
    key = f"order-{uuid.uuid4()}"
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=20) as http_a,
        httpx.AsyncClient(base_url=b.url, timeout=20) as http_b,
    ):
        answers = await asyncio.gather(
            *(
                (http_a if i % 2 else http_b).post(
                    "/v1/download/initiate",
                    json={"file_ids": [70000]},
                    headers={"Idempotency-Key": key},
                )
                for i in range(50)
            )
        )
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["jobId"] for r in answers}) == 1
    replayed = [r.headers.get("idempotent-replayed") == "true" for r in answers]
    assert replayed.count(False) == 1


async def test_idempotency_keys_are_each_owners_own(
    backend: Backend, replica_factory: ReplicaFactory
) -> None:
    """Bob's key never answers Alice: her request with the same key makes her own job (no
    409, nothing learnt about Bob's keys), while Bob's retry still replays his."""
    replica = replica_factory(**AUTH_ENV)
    bob = {"X-API-Key": "key-bob", "Idempotency-Key": "order-1"}
    alice = {"X-API-Key": "key-alice", "Idempotency-Key": "order-1"}
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        first = await http.post("/v1/download/initiate", json={"file_ids": [70000]}, headers=bob)
        hers = await http.post("/v1/download/initiate", json={"file_ids": [70007]}, headers=alice)
        again = await http.post("/v1/download/initiate", json={"file_ids": [70000]}, headers=bob)
    assert (first.status_code, hers.status_code, again.status_code) == (202, 202, 202)
    assert hers.json()["jobId"] != first.json()["jobId"]
    assert "idempotent-replayed" not in hers.headers
    assert again.json()["jobId"] == first.json()["jobId"]
    assert again.headers["idempotent-replayed"] == "true"


@pytest.fixture
def forgetful_backend(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Backend]:
    """Redis without persistence: a restart comes back empty."""
    backend = Backend("redis", tmp_path, s3_server, redis_fsync="none")
    backend.start()
    yield backend
    backend.stop()


async def follow_ws(url: str) -> list[dict[str, Any]]:
    return (await ws_collect(url, timeout=60)).frames


async def follow_sse(base: str, path: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        events, _ = await sse_events(http, path)
    return [e["data"] for e in events]


def ended_as_lost(frames: list[dict[str, Any]]) -> bool:
    """The watcher's last frame says the job failed as lost (a frame or a snapshot)."""
    last = frames[-1]
    error = last.get("error") or last.get("job", {}).get("error") or {}
    status = last.get("job", {}).get("status", last["type"])
    return status == "failed" and error.get("code") == "job_lost"


async def test_a_redis_that_comes_back_empty_ends_lost_jobs_and_keeps_working(
    forgetful_backend: Backend, tmp_path: Path
) -> None:
    """kill -9 Redis (no persistence) while two jobs run and one waits, watched over WS and
    SSE on both replicas; Redis restarts empty. Every watcher ends with the job failed as
    job_lost, after a recovered=false snapshot of a new epoch (never hanging on seqs it
    takes for duplicates); the dispatchers recreate their consumer group, /health says so,
    and a new job completes."""
    env = {
        **forgetful_backend.env(),
        "JOB_CONCURRENCY": "1",
        "DOWNLOAD_DELAY_MIN_MS": "6000",
        "DOWNLOAD_DELAY_MAX_MS": "6000",
    }
    replicas = [Replica(f"replica-{i}", env, tmp_path) for i in range(2)]
    for replica in replicas:
        replica.start()
    try:
        async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as http:
            jobs = [(await initiate(http, [70000]))["jobId"] for _ in range(3)]

            async def statuses() -> list[str]:
                return [(await http.get(f"/v1/download/status/{j}")).json()["status"] for j in jobs]

            await poll(statuses, lambda found: found.count("processing") == 2)
            epochs = {j: (await http.get(f"/v1/download/status/{j}")).json()["epoch"] for j in jobs}
        watchers = [
            asyncio.create_task(follow(job_id))
            for job_id in jobs
            for follow in (
                lambda j: follow_ws(f"{replicas[0].ws_url}/v1/download/subscribe/{j}"),
                lambda j: follow_sse(replicas[1].url, f"/v1/download/stream/{j}"),
            )
        ]
        await asyncio.sleep(1)
        assert forgetful_backend.redis is not None
        forgetful_backend.redis.kill()
        forgetful_backend.redis.start()
        results = await asyncio.gather(*watchers)
        for job_id, frames in zip([j for j in jobs for _ in range(2)], results, strict=True):
            assert ended_as_lost(frames), (job_id, frames[-3:])
            restart = next(f for f in frames if f["type"] == "snapshot" and not f["recovered"])
            assert restart["epoch"] != epochs[job_id]
            assert frames[-1]["epoch"] == restart["epoch"]
        for replica in replicas:
            async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
                health = await poll(lambda: http.get("/health"), lambda r: r.status_code == 200)
                assert health.json()["checks"]["queue"] == "ok"
                fresh = await initiate(http, [70000])
                assert (await settled(http, fresh["jobId"], timeout=40))["status"] == "completed"
    finally:
        for replica in replicas:
            replica.stop()


async def test_a_job_redis_lost_while_its_connections_stayed_up_ends_for_its_watchers(
    redis_backend: Backend, tmp_path: Path
) -> None:
    """A waiting job's record vanishes from a Redis that stays up, as when a failover demotes
    the primary it was written to: the replica's connections stay open (a demoted primary
    still relays pub/sub), so nothing reconnects and no resync runs. Within an audit period
    its WebSocket and SSE watchers end as job_lost instead of waiting forever."""
    import redis

    from delineate.redis import keys

    env = {
        **redis_backend.env(),
        "JOB_CONCURRENCY": "1",
        "DOWNLOAD_DELAY_MIN_MS": "30000",
        "DOWNLOAD_DELAY_MAX_MS": "30000",
        "WATCH_AUDIT_S": "0.5",
    }
    replica = Replica("replica", env, tmp_path)
    replica.start()
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
            _running, waiting = [(await initiate(http, [70000]))["jobId"] for _ in range(2)]
        watchers = [
            asyncio.create_task(ws_frames(f"{replica.ws_url}/v1/download/subscribe/{waiting}")),
            asyncio.create_task(follow_sse(replica.url, f"/v1/download/stream/{waiting}")),
        ]
        await asyncio.sleep(1)
        with redis.Redis(port=redis_backend.redis.port) as client:
            assert client.delete(keys.job(waiting)) == 1
            client.delete(keys.job_history(waiting))
        for frames in await asyncio.gather(*watchers):
            assert ended_as_lost(frames), frames[-3:]
    finally:
        replica.stop()


async def ws_frames(url: str) -> list[dict[str, Any]]:
    """Well before the running job's 30 s end frees the worker for the waiting one."""
    return (await ws_collect(url, timeout=15)).frames

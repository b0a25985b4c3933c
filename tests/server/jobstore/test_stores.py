"""The JobStore's create-and-queue step, on the in-process store and on a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from delineate.errors import BackendUnavailable
from delineate.jobs import state
from delineate.jobstore.base import JobStore
from delineate.jobstore.memory import MemoryJobStore
from delineate.jobstore.redis import RedisJobStore
from delineate.record import JobRecord
from delineate.redis import keys
from delineate.redis.client import close_client, redis_client
from delineate.settings import Settings
from tests.support.services import RedisCluster, RedisServer


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[JobStore]:
    client = None
    if request.param == "memory":
        store: JobStore = MemoryJobStore(retention_s=60)
    elif request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        client = redis_client(Settings(redis_url=url))
        store = RedisJobStore(client, retention_s=60, lease_ms=30_000)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = aioredis.Redis.from_url(server.url)
        store = RedisJobStore(client, retention_s=60, lease_ms=30_000)
    await store.start()
    yield store
    await store.stop()
    if client is not None:
        await close_client(client)


def new_record(job_id: str | None = None) -> JobRecord:
    return JobRecord(job=state.new_job(job_id or str(uuid.uuid4()), [70000]))


async def test_create_stores_the_record_and_queues_the_job(store: JobStore) -> None:
    record = new_record()
    assert await store.create(record, None) is record
    stored = await store.get(record.job.job_id)
    assert stored is not None
    assert stored.job.job_id == record.job.job_id
    assert await store.queued() == 1
    assert await store.take() == record.job.job_id
    await store.ack(record.job.job_id)


async def test_a_repeated_idempotency_key_returns_the_first_job_and_queues_nothing(
    store: JobStore,
) -> None:
    # Ids as the service makes them: from the key (on a Cluster, the key's slot).
    first, second = (new_record(store.new_job_id("key-1")) for _ in range(2))
    assert (await store.create(first, "key-1")).job.job_id == first.job.job_id
    again = await store.create(second, "key-1")
    assert again.job.job_id == first.job.job_id
    assert await store.get(second.job.job_id) is None
    assert await store.queued() == 1


async def test_a_read_whose_connection_is_lost_is_sent_again(redis_server: RedisServer) -> None:
    """A job's record is read through the store's pipe; losing the connection while the read
    waits for its reply (Redis restarted, a proxy's idle cut) costs a retry, not an error."""
    client = aioredis.Redis.from_url(redis_server.url)
    store = RedisJobStore(client, retention_s=60, lease_ms=30_000)
    await store.start()
    assert redis_server.pid is not None
    try:
        record = new_record()
        await store.create(record, None)
        assert (await store.head(record.job.job_id)) is not None  # the pipe is connected
        os.kill(redis_server.pid, signal.SIGSTOP)  # the reply cannot come before the cut
        try:
            read = asyncio.create_task(store.get(record.job.job_id))
            await asyncio.sleep(0.1)
            assert not read.done()
            store._pipe._connection._writer.transport.abort()  # type: ignore[union-attr]
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        stored = await asyncio.wait_for(read, 10)
        assert stored is not None
        assert stored.job.job_id == record.job.job_id
        assert await store.get(str(uuid.uuid4())) is None
    finally:
        await store.stop()
        await close_client(client)


@pytest.mark.parametrize("store", ["cluster"], indirect=True)
async def test_a_queue_read_on_a_cluster_is_one_round_trip(
    store: JobStore, session_cluster: RedisCluster
) -> None:
    """redis-py asks a node ``COMMAND GETKEYS`` for a stream read's keys unless told them:
    two extra round trips before every poll of every queue partition."""
    import redis

    for port in session_cluster.primary_ports():
        with redis.Redis(port=port, socket_timeout=5) as client:
            client.config_resetstat()
    record = new_record()
    await store.create(record, None)
    assert await store.take() == record.job.job_id
    await store.ack(record.job.job_id)
    reads = redirected = getkeys = 0
    for port in session_cluster.primary_ports():
        with redis.Redis(port=port, socket_timeout=5) as client:
            stats = client.info("commandstats")
        reads += stats.get("cmdstat_xreadgroup", {}).get("calls", 0)
        # A read sent to a node that does not own its slot is refused with MOVED.
        redirected += stats.get("cmdstat_xreadgroup", {}).get("rejected_calls", 0)
        getkeys += stats.get("cmdstat_command|getkeys", {}).get("calls", 0)
    assert reads >= 1
    assert redirected == 0
    assert getkeys == 0


@pytest.mark.parametrize("store", ["cluster"], indirect=True)
async def test_a_job_made_after_a_worker_dropped_its_entry_is_refused(store: JobStore) -> None:
    """On a Cluster the queue entry is added before the job. When the job's creation is
    delayed past the worker's wait (its shard failing over, its replica paused), the worker
    drops the entry; the job then must not be made, for no entry would ever run it. The
    late creation is refused (503: the client tries again)."""
    redis_store = store
    assert isinstance(redis_store, RedisJobStore)
    record = new_record()
    job_id = record.job.job_id
    queue = keys.queue_of(job_id, len(redis_store.partitions))
    await redis_store._redis.xadd(queue, {"job": job_id})  # the creator's first step
    worker = asyncio.create_task(store.take())
    try:
        async with asyncio.timeout(10):
            while not redis_store.orphans_dropped:  # noqa: ASYNC110 (no event to wait on)
                await asyncio.sleep(0.05)
    finally:
        worker.cancel()
    with pytest.raises(BackendUnavailable):
        await redis_store._add_job(record, None, None)  # the creator's delayed second step
    assert await store.get(job_id) is None
    assert await store.queued() == 0

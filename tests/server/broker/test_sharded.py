"""The Redis broker on a real Redis Cluster (3 primaries + 3 replicas): sharded pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from delineate.broker.redis_sharded import ShardedRedisBroker
from delineate.redis import keys as keys
from delineate.redis.client import close_client, redis_client
from delineate.settings import Settings
from tests.server.broker.test_brokers import Recorder
from tests.support.processes import require_binary, started
from tests.support.services import RedisCluster


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    require_binary("redis-server")
    require_binary("redis-cli")
    cluster = started(RedisCluster(tmp_path))
    yield cluster
    cluster.stop()


def job_on(cluster: RedisCluster, port: int) -> str:
    """A job id whose channel's slot the primary on ``port`` owns."""
    for _ in range(10_000):
        job_id = str(uuid.uuid4())
        if cluster.owner_of(keys.job_channel(job_id)).port == port:
            return job_id
    raise AssertionError("no job id found for the shard")


async def test_frames_reach_the_listener_through_each_shard(redis_cluster: RedisCluster) -> None:
    """A job on each primary: its frames come through that primary's connection; a signal
    reaches every replica."""
    recorder = Recorder()
    client = redis_client(Settings(redis_url=redis_cluster.url))
    broker = ShardedRedisBroker(client, history_max_frames=16, retention_s=60)
    await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
    try:
        jobs = [job_on(redis_cluster, port) for port in redis_cluster.primary_ports()]
        for job_id in jobs:
            await broker.subscribe(job_id)
            await broker.publish(job_id, "e1", [(1, b"frame-1")], terminal=False)
        await broker.signal(b"hello")
        await recorder.wait(lambda: len(recorder.frames) == 3 and recorder.signals)
        assert sorted(recorder.frames) == sorted((j, b"frame-1") for j in jobs)
        assert len(broker._shards) == 3
    finally:
        await broker.stop()
        await close_client(client)


async def test_frames_after_a_reconnect_wait_for_the_resync(redis_cluster: RedisCluster) -> None:
    """While the listener resubscribes many channels after a reconnect (one SSUBSCRIBE each),
    frames of the channels already subscribed again arrive; they reach the hub only after
    its resync. Delivered first, they would make the resync take the frames they follow
    (missed, still in history) for already seen, and those would be lost."""
    port = redis_cluster.primary_ports()[0]
    jobs = [job_on(redis_cluster, port) for _ in range(300)]
    recorder = Recorder()
    while_reconnecting: list[str] = []

    def deliver(job_id: str, payload: bytes) -> None:
        if not broker.connected:  # between the cut and the end of the resubscribe
            while_reconnecting.append(job_id)
        recorder.deliver(job_id, payload)

    client = redis_client(Settings(redis_url=redis_cluster.url))
    broker = ShardedRedisBroker(client, history_max_frames=16, retention_s=60)
    await broker.start(deliver, recorder.on_signal, recorder.resync)
    direct = redis.Redis(port=port)
    stop = asyncio.Event()

    async def publish_all_the_time() -> None:
        # SPUBLISH to every followed channel in turn, a round every few milliseconds.
        while not stop.is_set():
            for job_id in jobs[:20]:
                await asyncio.to_thread(direct.spublish, keys.job_channel(job_id), b"x")

    try:
        for job_id in jobs:
            await broker.subscribe(job_id)
        publisher = asyncio.create_task(publish_all_the_time())
        await recorder.wait(lambda: len(recorder.frames) > 20)
        killed = direct.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await recorder.wait(lambda: recorder.resyncs == 1, timeout=20)
        stop.set()
        await publisher
        assert broker.reconnects == 1
    finally:
        stop.set()
        await broker.stop()
        await close_client(client)
        with contextlib.suppress(redis.RedisError):
            direct.close()
    assert while_reconnecting == []
    assert len(recorder.frames) > 20  # and the held frames came after the resync

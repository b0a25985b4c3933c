"""Brokers for the tests of what runs on them: the in-process one, or the Redis one on the
test's own redis-server (the ``redis_server`` fixture) with the replica's real client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from delineate.broker.base import Broker
from delineate.broker.memory import MemoryBroker
from delineate.broker.redis import RedisBroker
from delineate.broker.redis_sharded import ShardedRedisBroker
from delineate.redis.client import close_client, redis_client
from delineate.settings import Settings
from tests.support.services import RedisServer


@contextlib.asynccontextmanager
async def broker_of(
    kind: str, request: pytest.FixtureRequest, *, history_max_frames: int
) -> AsyncIterator[Broker]:
    """A broker of ``kind`` ("memory" or "redis"), not started yet; its client is closed
    afterwards."""
    if kind == "memory":
        yield MemoryBroker(history_max_frames=history_max_frames, retention_s=60)
        return
    if kind == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        cluster_client = redis_client(Settings(redis_url=url))
        try:
            yield ShardedRedisBroker(
                cluster_client, history_max_frames=history_max_frames, retention_s=60
            )
        finally:
            await close_client(cluster_client)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis_client(Settings(redis_url=server.url))
    try:
        yield RedisBroker(client, history_max_frames=history_max_frames, retention_s=60)
    finally:
        await client.aclose()

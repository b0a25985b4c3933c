"""Brokers for the tests of what runs on them: the in-process one, or the Redis one on the
test's own redis-server (the ``redis_server`` fixture) with the replica's real client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from server.broker.base import Broker
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.redis_client import redis_client
from server.settings import Settings
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
    server: RedisServer = request.getfixturevalue("redis_server")
    client = redis_client(Settings(redis_url=server.url))
    try:
        yield RedisBroker(client, history_max_frames=history_max_frames, retention_s=60)
    finally:
        await client.aclose()

"""The dashboard's shared state behaves the same in memory and in a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from delineate.ops.redis_store import RedisOpsStore
from delineate.ops.store import MemoryOpsStore, OpsStore
from tests.support.services import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[OpsStore]:
    if request.param == "memory":
        yield MemoryOpsStore(keep=3, traces=2)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = aioredis.Redis.from_url(server.url)
    yield RedisOpsStore(client, keep=3, traces=2)
    await client.aclose()


async def test_recent_lists_are_newest_first_and_bounded(store: OpsStore) -> None:
    """Pushes keep the newest ``keep`` entries, newest first, jobs and errors apart."""
    await store.push([b"j1", b"j2"], [b"e1"])
    await store.push([b"j3", b"j4"], [])
    assert await store.recent() == ([b"j4", b"j3", b"j2"], [b"e1"])


async def test_heartbeats_are_one_per_replica_until_forgotten(store: OpsStore) -> None:
    await store.beat("a", b"a1")
    await store.beat("b", b"b1")
    await store.beat("a", b"a2")
    assert sorted(await store.beats()) == [b"a2", b"b1"]
    await store.forget("a")
    assert await store.beats() == [b"b1"]


async def test_spans_gather_by_trace_in_arrival_order(store: OpsStore) -> None:
    await store.add_spans({"t1": [b"s1"], "t2": [b"x"]})
    await store.add_spans({"t1": [b"s2", b"s3"]})
    assert await store.spans("t1") == [b"s1", b"s2", b"s3"]
    assert await store.spans("unknown") == []

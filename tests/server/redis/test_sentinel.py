"""The client's connections let go of an old primary as soon as the sentinels switch, on a
real primary + 2 replicas + 3 sentinels."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ResponseError

from delineate.devstack.stack import wait_for
from delineate.redis.client import close_client, follow_failovers, redis_client
from delineate.redis.pipe import RedisPipe
from delineate.settings import Settings
from tests.support.services import RedisSentinels, redis_of


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[RedisSentinels]:
    group = redis_of("sentinel", tmp_path)
    group.start()
    yield group
    group.stop()


def _set_on(port: int, key: str, value: str) -> bool:
    """SET on the node at ``port``; False while it refuses (no replica follows it yet)."""
    with redis.Redis(port=port, socket_timeout=2) as node:
        try:
            return bool(node.set(key, value))
        except ResponseError:
            return False


async def test_connections_leave_a_paused_primary_when_the_sentinels_switch(
    sentinels: RedisSentinels,
) -> None:
    """A primary paused (SIGSTOP) past the sentinels' down-after is failed over. Resumed, it
    believes it is still the primary until the sentinels demote it (their INFO round, up to
    10 s) and serves reads that lack every write since, to every connection still on it.
    The client closes its connections (the pool's and a pipe's) at the switch, so reads right
    after the resume come from the new primary, and a command in flight is sent again there
    (its reconnect asks the sentinels, not the old address)."""
    client = redis_client(Settings(redis_url=sentinels.url))
    follow_failovers(client)
    pipe = RedisPipe(client.connection_pool)
    old = sentinels.node_of(sentinels.primary_port())
    assert old.pid is not None
    try:
        await pipe.call("SET", "delineate:test:k", "before")
        assert await client.get("delineate:test:k") == b"before"  # a pooled connection too
        os.kill(old.pid, signal.SIGSTOP)
        try:
            # In flight on the paused primary at the switch: sent again on the new one.
            waiting = asyncio.create_task(client.blpop(["delineate:test:q"], timeout=15))
            await asyncio.to_thread(
                wait_for, lambda: sentinels.primary_port() != old.port, 30, "a failover"
            )
            new = sentinels.primary_port()
            await asyncio.to_thread(
                wait_for, lambda: _set_on(new, "delineate:test:k", "after"), 30, "a write"
            )
            watch = client.connection_pool.switch_watch
            await asyncio.to_thread(wait_for, lambda: watch.switches, 10, "the switch")
            with redis.Redis(port=new, socket_timeout=2) as primary:
                primary.rpush("delineate:test:q", "pushed")
        finally:
            os.kill(old.pid, signal.SIGCONT)
        assert await pipe.call("GET", "delineate:test:k") == b"after"
        assert await client.get("delineate:test:k") == b"after"
        async with asyncio.timeout(10):
            assert await waiting == (b"delineate:test:q", b"pushed")
    finally:
        await pipe.aclose()
        await close_client(client)

"""The replica's Redis client keeps a cancellation that arrives during a command.

On Python 3.11 redis-py's own connection loses most of these (its writes run under
``asyncio.wait_for``); a lost one let a cancelled or handed-back job run on to its end.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.exceptions import ConnectionError

from delineate.redis.client import CancellableWrites, redis_client
from delineate.settings import Settings
from tests.support.services import RedisServer


async def test_a_task_cancelled_mid_command_stops(redis_server: RedisServer) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    assert issubclass(client.connection_pool.connection_class, CancellableWrites)
    rng = random.Random(7)
    commands = 0

    async def write_forever() -> None:
        nonlocal commands
        while True:
            await client.set("delineate:test:key", "x" * 300)
            commands += 1

    try:
        kept_running = 0
        for _ in range(60):
            task = asyncio.ensure_future(write_forever())
            await asyncio.sleep(rng.uniform(0.001, 0.008))  # mid-stream of commands
            task.cancel()
            await asyncio.sleep(0.02)  # dozens of commands' time
            kept_running += not task.done()
            for _ in range(100):  # a lost cancel is retried, so one failure stays one
                if task.done():
                    break
                task.cancel()
                await asyncio.sleep(0.01)
            assert task.cancelled()
        assert commands > 60  # the cancels did land among running commands
        assert kept_running == 0
        assert await client.get("delineate:test:key") == b"x" * 300  # the pool still works
    finally:
        await client.aclose()


async def test_a_write_to_a_dead_server_is_a_connection_error(
    redis_server: RedisServer,
) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    try:
        await client.ping()
        redis_server.stop()
        with pytest.raises(ConnectionError):
            await client.set("delineate:test:key", "x")
    finally:
        await client.aclose()

"""The replica's Redis client keeps a cancellation that arrives during a command.

On Python 3.11 redis-py's own connection loses most of these (its writes run under
``asyncio.wait_for``); a lost one let a cancelled or handed-back job run on to its end.
On a Cluster, it routes a stream read by the keys it reads from the command itself.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError

from delineate.redis.client import CancellableWrites, redis_client, stream_read_keys
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
            before = commands
            task = asyncio.ensure_future(write_forever())
            async with asyncio.timeout(10):  # commands are flowing (a loaded box is slow)
                while commands == before:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            await asyncio.sleep(rng.uniform(0, 0.004))  # mid-stream of commands
            task.cancel()
            await asyncio.sleep(0.02)  # dozens of commands' time
            kept_running += not task.done()
            for _ in range(100):  # a lost cancel is retried, so one failure stays one
                if task.done():
                    break
                task.cancel()
                await asyncio.sleep(0.01)
            assert task.cancelled()
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


async def test_a_primary_without_replicas_is_a_lost_connection(tmp_path: Path) -> None:
    """A NOREPLICAS refusal (``min-replicas-to-write``, a primary left alone) is a lost
    connection, which the backends report as Redis unavailable and a Sentinel pool answers by
    asking for the primary again; reads still work, and writes once it may write again."""
    alone = RedisServer(tmp_path, name="alone", fsync="none")
    alone.start()
    client = redis_client(Settings(redis_url=alone.url))
    try:
        await client.config_set("min-replicas-to-write", 1)
        with pytest.raises(ConnectionError, match="NOREPLICAS"):
            await client.set("delineate:test:key", "x")
        with pytest.raises(ConnectionError, match="NOREPLICAS"):
            await client.eval("return redis.call('SET', KEYS[1], 'x')", 1, "delineate:test:key")
        assert await client.get("delineate:test:key") is None
        await client.config_set("min-replicas-to-write", 0)
        assert await client.set("delineate:test:key", "x")
    finally:
        await client.aclose()
        alone.stop()


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "q{0}", "q{1}", ">", ">"),
         ["q{0}", "q{1}"]),
        ((b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", 50, b"NOACK", b"STREAMS", b"q", b">"),
         [b"q"]),
        (("xread", "count", 5, "block", 0, "streams", "h", "0-0"), ["h"]),
        # A consumer or group named like an option is not one.
        (("XREADGROUP", "GROUP", "STREAMS", "COUNT", "STREAMS", "q", ">"), ["q"]),
        (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "q", "r", ">"), None),  # odd: the node
        (("XREADGROUP", "GROUP", "g", "c", "LATER", 1, "STREAMS", "q", ">"), None),
        (("XREAD", "STREAMS"), None),
        (("GET", "k"), None),
    ],
)  # fmt: skip
def test_a_stream_reads_keys_come_from_the_command(args: tuple[object, ...], keys: object) -> None:
    """None sends the command to redis-py's own finder, which asks a node."""
    assert stream_read_keys(args) == keys

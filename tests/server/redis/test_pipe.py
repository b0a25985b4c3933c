"""The pipelined Redis connection on a real redis-server, through the replica's own client
(so the redis-py connection internals it reads from are pinned here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from delineate.redis.client import redis_client
from delineate.redis.pipe import PipeScript, RedisPipe
from delineate.settings import Settings
from tests.support.proxy import ReplyGate
from tests.support.services import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(Settings(redis_url=redis_server.url))
    yield client
    await client.aclose()


@pytest.fixture
async def pipe(client: aioredis.Redis) -> AsyncIterator[RedisPipe]:
    pipe = RedisPipe(client.connection_pool)
    yield pipe
    await pipe.aclose()


async def test_concurrent_callers_each_get_their_own_reply(pipe: RedisPipe) -> None:
    replies = await asyncio.gather(
        *(pipe.call("ECHO", f"m{i}") if i % 3 else pipe.call("INCR", "n") for i in range(300))
    )
    echoes = [r for i, r in enumerate(replies) if i % 3]
    counts = [r for i, r in enumerate(replies) if not i % 3]
    assert echoes == [f"m{i}".encode() for i in range(300) if i % 3]
    assert counts == list(range(1, 101))


async def test_an_error_reply_raises_and_the_pipe_goes_on(pipe: RedisPipe) -> None:
    await pipe.call("SET", "s", "text")
    with pytest.raises(ResponseError, match="not an integer"):
        await pipe.call("INCR", "s")
    assert await pipe.call("GET", "s") == b"text"


async def test_a_script_runs_by_sha_and_in_full_when_redis_lost_it(
    pipe: RedisPipe, client: aioredis.Redis
) -> None:
    script = PipeScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await pipe.evalsha(script, ["k"], [2]) == 2
    await client.script_flush()
    assert await pipe.evalsha(script, ["k"], [3]) == 5  # NOSCRIPT, then EVAL
    assert await client.script_exists(script.sha) == [True]  # EVAL cached it again


async def test_the_urls_options_apply(redis_server: RedisServer) -> None:
    client = redis_client(Settings(redis_url=f"{redis_server.url}/3?client_name=journal"))
    pipe = RedisPipe(client.connection_pool)
    try:
        await pipe.call("SET", "where", "db3")
        assert await pipe.call("CLIENT", "GETNAME") == b"journal"
        assert await client.get("where") == b"db3"
        db0 = aioredis.Redis.from_url(redis_server.url)
        assert await db0.get("where") is None
        await db0.aclose()
    finally:
        await pipe.aclose()
        await client.aclose()


async def test_a_cancelled_caller_leaves_the_replies_in_step(redis_server: RedisServer) -> None:
    async with ReplyGate(redis_server.port) as gate:
        client = redis_client(Settings(redis_url=f"redis://127.0.0.1:{gate.port}"))
        pipe = RedisPipe(client.connection_pool)
        try:
            await pipe.call("PING")  # connected
            gate.hold()
            first = asyncio.create_task(pipe.call("ECHO", "first"))
            await asyncio.sleep(0.05)
            first.cancel()
            second = asyncio.create_task(pipe.call("ECHO", "second"))
            await asyncio.sleep(0.05)
            gate.release()
            async with asyncio.timeout(10):
                assert await second == b"second"
            assert first.cancelled()
            assert await pipe.call("ECHO", "third") == b"third"
        finally:
            await pipe.aclose()
            await client.aclose()


async def test_a_lost_connection_fails_the_waiting_calls_and_the_next_call_reconnects(
    pipe: RedisPipe, client: aioredis.Redis
) -> None:
    await pipe.call("CLIENT", "SETNAME", "pipe")
    waiting = asyncio.create_task(pipe.call("BLPOP", "nothing", 30))
    await asyncio.sleep(0.1)
    killed = 0
    for info in await client.client_list():
        if info["name"] == "pipe":
            killed += await client.client_kill_filter(_id=info["id"])
    assert killed == 1
    async with asyncio.timeout(10):
        with pytest.raises(RedisConnectionError):
            await waiting
    assert await pipe.call("ECHO", "again") == b"again"


async def test_a_reply_that_never_comes_is_a_timeout_then_a_new_connection(
    redis_server: RedisServer,
) -> None:
    async with ReplyGate(redis_server.port) as gate:
        client = redis_client(Settings(redis_url=f"redis://127.0.0.1:{gate.port}"))
        pipe = RedisPipe(client.connection_pool, timeout_s=0.3)
        try:
            await pipe.call("PING")
            gate.hold()
            other = asyncio.create_task(pipe.call("ECHO", "other"))
            with pytest.raises(RedisTimeoutError):
                await pipe.call("ECHO", "held")
            with pytest.raises(RedisTimeoutError):
                await other  # on the connection given up
            gate.release()
            async with asyncio.timeout(10):
                assert await pipe.call("ECHO", "fresh") == b"fresh"
        finally:
            await pipe.aclose()
            await client.aclose()


def test_a_socket_closed_under_the_pipe_is_a_connection_error(redis_server: RedisServer) -> None:
    """On uvloop (the replicas' loop) a write to a socket that closed before the reader
    noticed raises RuntimeError: the pipe reports it as the lost connection it is (a job
    took it for a crash and failed, when Redis was killed under it), and connects again."""
    import uvloop

    async def scenario() -> None:
        client = redis_client(Settings(redis_url=redis_server.url))
        pipe = RedisPipe(client.connection_pool)
        try:
            assert await pipe.call("PING") == b"PONG"
            pipe._connection._writer.transport.abort()
            await asyncio.sleep(0)  # the transport closes; the reader has not run yet
            with pytest.raises(RedisConnectionError):
                await pipe.call("PING")
            assert await pipe.call("PING") == b"PONG"
        finally:
            await pipe.aclose()
            await client.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_primary_demoted_to_a_replica_is_a_lost_connection(tmp_path: Path) -> None:
    """After a failover the old primary answers writes with READONLY. The pipe treats that
    as a lost connection (ConnectionError, which the journal reports as Redis unavailable and
    its callers retry) and connects again on the next call, so a Sentinel pool can hand it
    the new primary; a job whose write met it never fails for good."""
    primary = RedisServer(tmp_path, name="primary", fsync="none")
    demoted = RedisServer(tmp_path, name="demoted", fsync="none")
    primary.start()
    demoted.start()
    client = redis_client(Settings(redis_url=demoted.url))
    pipe = RedisPipe(client.connection_pool)
    try:
        assert await pipe.call("SET", "k", "1") == b"OK"
        await pipe.call("CLIENT", "SETNAME", "before")
        await client.replicaof("127.0.0.1", primary.port)
        with pytest.raises(RedisConnectionError, match="READONLY"):
            await pipe.call("SET", "k", "2")
        await client.replicaof("NO", "ONE")  # promoted again: the next call reconnects
        assert await pipe.call("SET", "k", "3") == b"OK"
        assert await pipe.call("CLIENT", "GETNAME") is None  # a new connection
    finally:
        await pipe.aclose()
        await client.aclose()
        demoted.stop()
        primary.stop()


async def test_a_primary_left_without_replicas_is_a_lost_connection(tmp_path: Path) -> None:
    """Under ``min-replicas-to-write`` a primary with no live replica (an old primary that
    restarted alone, not yet demoted) refuses writes with NOREPLICAS, in a script too. The
    pipe treats that as a lost connection, and reconnects once the primary may write again."""
    alone = RedisServer(tmp_path, name="alone", fsync="none")
    alone.start()
    client = redis_client(Settings(redis_url=alone.url))
    pipe = RedisPipe(client.connection_pool)
    script = PipeScript("return redis.call('SET', KEYS[1], ARGV[1])")
    try:
        await pipe.call("CLIENT", "SETNAME", "before")
        await client.config_set("min-replicas-to-write", 1)
        with pytest.raises(RedisConnectionError, match="NOREPLICAS"):
            await pipe.evalsha(script, ["k"], ["1"])
        assert await pipe.call("GET", "k") is None  # reads are answered, on a new connection
        assert await pipe.call("CLIENT", "GETNAME") is None
        await client.config_set("min-replicas-to-write", 0)
        assert await pipe.evalsha(script, ["k"], ["2"]) == b"OK"
    finally:
        await pipe.aclose()
        await client.aclose()
        alone.stop()


@pytest.mark.parametrize("when", ["after its reader started", "before its reader started"])
async def test_a_connection_closed_under_the_pipe_is_a_lost_connection(
    pipe: RedisPipe, when: str
) -> None:
    """Sentinel's watch closes the pipe's connection from outside at a switch. A call in
    the moment before the pipe's reader notices gets redis-py's ConnectionError like any lost
    connection (not an AttributeError of the closed socket), and the next call reconnects."""
    if when == "after its reader started":
        assert await pipe.call("PING") == b"PONG"
        connection = pipe._connection
    else:
        connection = await pipe._connect()
    await connection.disconnect(nowait=True)
    with pytest.raises(RedisConnectionError):
        await pipe.call("PING")
    assert await pipe.call("PING") == b"PONG"

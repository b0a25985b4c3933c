"""The broker's lean pub/sub reader on a real redis-server, through the replica's own client
(so the redis-py connection internals it reads from are pinned here)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from server.broker.redis_pubsub import PubSubConnection
from server.redis_client import redis_client, without_retries
from server.settings import Settings
from tests.support.services import RedisServer


async def test_replies_and_messages_arrive_in_order_in_batches(redis_server: RedisServer) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    listener = without_retries(client)
    pubsub = await PubSubConnection.open(listener.connection_pool)
    try:
        await pubsub.subscribe("a", "b")
        replies = []
        async with asyncio.timeout(10):
            while len(replies) < 2:
                replies += await pubsub.read()
        assert replies == [[b"subscribe", b"a", 1], [b"subscribe", b"b", 2]]
        async with client.pipeline(transaction=False) as pipe:
            for i in range(50):
                pipe.publish("a" if i % 2 else "b", f"m{i}")
            await pipe.execute()
        await pubsub.ping()
        messages = []
        async with asyncio.timeout(10):
            while len(messages) < 51:
                messages += await pubsub.read()
        assert messages[:50] == [
            [b"message", b"a" if i % 2 else b"b", f"m{i}".encode()] for i in range(50)
        ]
        assert messages[50] in ([b"pong", b""], b"PONG")  # RESP2, RESP3
        await pubsub.unsubscribe("a")
        async with asyncio.timeout(10):
            assert await pubsub.read() == [[b"unsubscribe", b"a", 1]]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()


async def test_a_closed_connection_is_an_error_not_an_endless_wait(
    redis_server: RedisServer,
) -> None:
    client = redis_client(Settings(redis_url=redis_server.url))
    listener = without_retries(client)
    pubsub = await PubSubConnection.open(listener.connection_pool)
    try:
        await pubsub.subscribe("a")
        await pubsub.read()
        assert await client.client_kill_filter(_type="pubsub") == 1
        with pytest.raises(RedisConnectionError):
            async with asyncio.timeout(10):
                await pubsub.read()
        with pytest.raises(RedisConnectionError):
            await pubsub.subscribe("b")  # never a silent reconnect that nobody reads
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()

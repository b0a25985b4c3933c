"""The broker's lean pub/sub reader on a real redis-server, through the replica's own client
(so the redis-py connection internals it reads from are pinned here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from delineate.broker.redis_pubsub import PubSubConnection
from delineate.redis.client import redis_client, without_retries
from delineate.settings import Settings
from tests.support.services import RedisServer

Opened = tuple[Any, PubSubConnection]


@pytest.fixture
async def opened(redis_server: RedisServer) -> AsyncIterator[Opened]:
    """The replica's client and a pub/sub connection of its listener's pool."""
    client = redis_client(Settings(redis_url=redis_server.url))
    listener = without_retries(client)
    pubsub = await PubSubConnection.open(listener.connection_pool)
    try:
        yield client, pubsub
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await client.aclose()


async def test_replies_and_messages_arrive_in_order_in_batches(opened: Opened) -> None:
    client, pubsub = opened
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


async def test_a_closed_connection_is_an_error_not_an_endless_wait(opened: Opened) -> None:
    client, pubsub = opened
    await pubsub.subscribe("a")
    await pubsub.read()
    assert await client.client_kill_filter(_type="pubsub") == 1
    with pytest.raises(RedisConnectionError):
        async with asyncio.timeout(10):
            await pubsub.read()
    with pytest.raises(RedisConnectionError):
        await pubsub.subscribe("b")  # never a silent reconnect that nobody reads


async def test_closing_wakes_a_pending_read_even_after_redis_py_forgot_the_socket(
    opened: Opened,
) -> None:
    """The broker's health check closes a silent connection and counts on the pending read
    to fail, so the listener reconnects. redis-py's own disconnect does nothing once its
    connection has dropped the socket (as a failed PING's write does): the close must wake
    the read itself, or the replica listens to nothing for good."""
    _, pubsub = opened
    await pubsub.subscribe("a")
    await pubsub.read()
    pending = asyncio.ensure_future(pubsub.read())
    await asyncio.sleep(0.1)
    connection = pubsub._connection
    writer = connection._writer
    connection._reader = connection._writer = None  # what a failed write leaves behind
    await pubsub.aclose()
    with pytest.raises(RedisConnectionError):
        async with asyncio.timeout(5):
            await pending
    writer.close()

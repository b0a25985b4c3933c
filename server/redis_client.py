"""The replica's one redis.asyncio client, and the connection class it uses.

redis-py writes each command under ``asyncio.wait_for`` when the connection has a socket
timeout. On Python 3.11, ``wait_for`` returns the result and *drops a cancellation* that
arrives as the awaited write finishes (CPython gh-86296, fixed by 3.12's rewrite on
``asyncio.timeout``), and a write nearly always finishes at once. A task cancelled during a
Redis command then simply goes on: a job cancelled by a user or handed back at shutdown
kept running to its end on the old replica. ``wait_for`` also runs the write in a task of
its own, per command. ``CancellableWrites`` writes under ``asyncio.timeout`` instead: the
same timeout and errors, the cancellation kept, no task.
``tests/server/test_redis_client.py`` shows the loss with redis-py's own class and its
absence with this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.settings import Settings


class CancellableWrites(AbstractConnection):
    """redis-py's ``send_packed_command`` (8.x), with ``asyncio.timeout`` for ``wait_for``."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer: Any = self._writer
            writer.writelines(command)
            async with asyncio.timeout(self.socket_timeout or None):
                await writer.drain()
        except TimeoutError:  # the builtin one, which asyncio.timeout raises
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else e.args[:2]
            raise ConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            # A write cut short (a cancellation) leaves the connection mid-command.
            await self.disconnect(nowait=True)
            raise


def with_cancellable_writes(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (plain, TLS or unix-socket connection, as the URL chose) with the fix mixed in."""
    return type(f"CancellableWrites{cls.__name__}", (CancellableWrites, cls), {})


def redis_client(settings: Settings) -> aioredis.Redis:
    assert settings.redis_url
    # Short socket timeouts: a dead Redis must fail fast (health, frames), never hang.
    # A few quick retries turn a pooled connection that died in a Redis restart into a
    # reconnect instead of an error.
    # A blocking pool: a burst of subscribers waits briefly for a connection instead of
    # failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=64 + settings.job_concurrency,
        timeout=5,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[ConnectionError, RedisTimeoutError],
    )
    pool.connection_class = with_cancellable_writes(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def without_retries(client: aioredis.Redis) -> aioredis.Redis:
    """A client like ``client`` (same server, options and connection class) whose commands
    are never retried: for the broker's pub/sub connection, whose listener must see every
    disconnect to resubscribe and resync (redis-py would reconnect it silently)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "retry_on_error": []}
    own = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return aioredis.Redis.from_pool(own)

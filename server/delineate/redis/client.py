"""The replica's one redis.asyncio client (one node, Sentinel or Cluster, as REDIS_URL says),
and the connection class it uses.

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

The same class turns a ``NOREPLICAS`` reply (a primary with no live replica refuses writes
under ``min-replicas-to-write``) into a lost connection, as redis-py's Sentinel connections
turn ``READONLY``: the retry reconnects, and through Sentinel finds the promoted primary.

On a Cluster, ``StreamKeysParser`` finds a stream read's keys without asking a node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from delineate.redis.errors import from_a_lost_primary
from delineate.redis.sentinel import SwitchWatch, stop_watch, watch_of
from delineate.redis.url import RedisTarget, parse_redis_url

if TYPE_CHECKING:  # the settings check REDIS_URL with this package's parser
    from delineate.settings import Settings


class CancellableWrites(AbstractConnection):
    """redis-py's ``send_packed_command`` (8.x), with ``asyncio.timeout`` for ``wait_for``."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.is_connected:
            if isinstance(self, SentinelManagedConnection):
                # A retry after a lost connection: ask the sentinels again, as a checkout
                # does (connect_check_health would dial the old primary's address).
                await self.connect()  # type: ignore[no-untyped-call]
            else:
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

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not from_a_lost_primary(str(exc)):
                raise
            await self.disconnect()
            raise ConnectionError(f"not a writable primary: {exc}") from exc


def with_cancellable_writes(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (plain, TLS or unix-socket connection, as the URL chose) with the fix mixed in."""
    return type(f"CancellableWrites{cls.__name__}", (CancellableWrites, cls), {})


# Short socket timeouts: a dead Redis must fail fast (health, frames), never hang. A few
# quick retries turn a pooled connection that died in a Redis restart into a reconnect
# instead of an error.
TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 10,
}

# redis-py asks every new RESP3 connection to enable maintenance notifications (a managed
# service's announcements of a node moving); a self-run primary refuses with an error: one
# more round trip per connection, paid in every burst that grows the pool.
WITHOUT_MAINT_NOTIFICATIONS: dict[str, Any] = {
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}


CLUSTER_CONNECTIONS_PER_NODE = 2048


def command_retry() -> Retry:
    """The client's retries of a command whose connection was lost (the job store's reads
    through the pipe take the same)."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)


def redis_client(settings: Settings) -> Any:
    """The client for REDIS_URL's mode: ``redis.asyncio.Redis`` (one node, or the primary a
    Sentinel names, found again after a failover) or ``redis.asyncio.RedisCluster``."""
    assert settings.redis_url
    target = parse_redis_url(settings.redis_url)
    if target.mode == "cluster":
        return _cluster_client(target, settings)
    if target.mode == "sentinel":
        return _sentinel_client(target, settings)
    # A blocking pool: a burst of subscribers waits briefly for a connection instead of
    # failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=64 + settings.job_concurrency,
        timeout=5,
        retry=command_retry(),
        retry_on_error=[ConnectionError, RedisTimeoutError],
        **TIMEOUTS,
        **WITHOUT_MAINT_NOTIFICATIONS,
    )
    pool.connection_class = with_cancellable_writes(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def _sentinel_client(target: RedisTarget, settings: Settings) -> Any:
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
        """Sentinel's pool (connections find the current primary), blocking like the
        one-node pool: a burst waits for a connection instead of "Too many connections"."""

    sentinel_kwargs = {"socket_timeout": 1, "socket_connect_timeout": 1}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password  # type: ignore[assignment]
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        target.service,
        connection_pool_class=BlockingSentinelPool,
        timeout=5,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        max_connections=64 + settings.job_concurrency,
        retry=command_retry(),
        retry_on_error=[ConnectionError, RedisTimeoutError],
        **TIMEOUTS,
        **WITHOUT_MAINT_NOTIFICATIONS,
    )
    pool = client.connection_pool
    watch = SwitchWatch(list(target.nodes), target.service, sentinel_kwargs)
    pool.connection_class = watch.connection_class(with_cancellable_writes(pool.connection_class))
    pool.switch_watch = watch
    return client


def follow_failovers(client: Any) -> None:
    """Start ``client``'s watch of the sentinels (``delineate.redis.sentinel``), if it has one;
    ``close_client`` stops it. Needs the running loop, unlike building the client."""
    watch = watch_of(client)
    if watch is not None:
        watch.start()


def _cluster_client(target: RedisTarget, settings: Settings) -> Any:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        # Per node, and redis-py's cluster pool does not wait for a free connection (it
        # raises): room for a burst of subscribers, each reading history and a record.
        max_connections=CLUSTER_CONNECTIONS_PER_NODE,
        # Slots are uncovered for the seconds a failover takes: answer 503 for those
        # jobs meanwhile rather than refuse to start or to serve the other slots.
        require_full_coverage=False,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 6),
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    client.commands_parser = StreamKeysParser()
    manager = client.nodes_manager
    base = manager.connection_kwargs.get("connection_class") or Connection
    writes = with_cancellable_writes(base)
    manager.connection_kwargs["connection_class"] = writes
    for node in manager.startup_nodes.values():
        node.connection_class = writes  # type: ignore[assignment]
    return client


class StreamKeysParser(AsyncCommandsParser):
    """redis-py's key finder, reading a stream read's keys from the command: for a command
    whose keys are "movable" it asks a node ``COMMAND GETKEYS``, twice per call in 8.1, so
    every queue poll cost three round trips instead of one."""

    async def get_keys(self, *args: Any) -> Any:
        keys = stream_read_keys(args)
        return keys if keys is not None else await super().get_keys(*args)


def stream_read_keys(args: tuple[Any, ...]) -> list[Any] | None:
    """The keys of an ``XREAD`` or ``XREADGROUP`` (the first half of what follows
    ``STREAMS``); None for another command or one this does not parse (the node decides)."""

    def word(arg: Any) -> str:
        return (arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)).upper()

    name = word(args[0]) if args else ""
    if name not in ("XREAD", "XREADGROUP"):
        return None
    i = 4 if name == "XREADGROUP" else 1  # past GROUP <group> <consumer>
    if name == "XREADGROUP" and (len(args) < 4 or word(args[1]) != "GROUP"):
        return None
    while i < len(args):
        option = word(args[i])
        if option == "STREAMS":
            streams = args[i + 1 :]
            if not streams or len(streams) % 2:
                return None
            return list(streams[: len(streams) // 2])
        i += 2 if option in ("COUNT", "BLOCK") else 1 if option == "NOACK" else len(args)
    return None


async def close_client(client: Any) -> None:
    """``client.aclose()``, and what redis-py leaves open: on a Cluster every node's
    connections (its ``aclose`` does nothing while the client is marked to reload the slot
    map, after any connection error); on Sentinel the watch and the clients its pool asks
    for the primary."""
    if is_cluster(client):
        await client.aclose()
        await client.nodes_manager.aclose()
        await client.nodes_manager.aclose("startup_nodes")
        return
    await stop_watch(client)
    try:
        await client.aclose()
    finally:
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def is_cluster(client: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def without_retries(client: aioredis.Redis) -> aioredis.Redis:
    """A client like ``client`` (same server, options and connection class) whose commands
    are never retried: for the broker's pub/sub connection, whose listener must see every
    disconnect to resubscribe and resync (redis-py would reconnect it silently)."""
    pool = client.connection_pool
    kwargs = {
        **pool.connection_kwargs, **WITHOUT_MAINT_NOTIFICATIONS,
        "retry": Retry(NoBackoff(), 0), "retry_on_error": [],
    }  # fmt: skip
    own = aioredis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return aioredis.Redis.from_pool(own)

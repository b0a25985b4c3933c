"""Sentinel: every connection the client made lets go of the old primary as soon as the
sentinels switch to a new one.

redis-py's Sentinel connections find the primary when they connect and let go of it only
when it refuses a write (``READONLY``, or ``NOREPLICAS`` here). An old primary that comes
back after the sentinels promoted another (from a pause, or restarted from its own files)
believes it is the primary until they demote it, which takes up to their 10-second INFO
round. Meanwhile a connection still on it reads data that lacks every write since (a job
created since is "not found"), and a pub/sub connection on it hears no frame.

``SwitchWatch`` subscribes to ``+switch-master`` on every sentinel and, at each announcement
for this service, closes the connections the client's pools made (the pool's, the pipes',
the pub/sub listener's) that are not on the new primary: each reconnects and asks the
sentinels again. It is what the sentinels' own ``CLIENT KILL`` at the demotion does, seconds
earlier; Jedis and Lettuce listen the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError

from delineate.backoff import full_jitter

log = logging.getLogger("delineate.redis")

CHANNEL = "+switch-master"
IDLE_PING_S = 5.0
"""A sentinel connection silent this long is pinged, and given up after as long again
without an answer (a paused or cut-off sentinel must not go unnoticed)."""


class SwitchWatch:
    def __init__(
        self, sentinels: list[tuple[str, int]], service: str, sentinel_kwargs: dict[str, Any]
    ) -> None:
        self._sentinels = sentinels
        self._service = service
        self._kwargs = {**sentinel_kwargs, "socket_timeout": None}  # a quiet channel is fine
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self._primary: tuple[str, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.switches = 0
        """Switches of this service's primary acted on (for tests and the log)."""

    def connection_class(self, base: type) -> type:
        """``base`` with every instance tracked, to be closed at a switch."""
        watch = self

        class Tracked(base):  # type: ignore[misc]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                watch._connections.add(self)

        Tracked.__name__ = Tracked.__qualname__ = f"Tracked{base.__name__}"
        return Tracked

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._listen(host, port), name=f"sentinel-watch-{host}:{port}")
            for host, port in self._sentinels
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def switched(self, data: str) -> None:
        """A ``+switch-master`` message: ``<service> <old ip> <old port> <new ip> <new port>``.
        Every sentinel announces the switch, and each announcement closes the connections
        not on the new primary: one made through a sentinel that had not caught up yet is
        closed by a later announcement, and those already on the new primary go on."""
        fields = data.split()
        if len(fields) != 5 or fields[0] != self._service:
            return
        primary = (fields[3], int(fields[4]))
        if primary != self._primary:
            self._primary = primary
            self.switches += 1
        stale = [
            connection
            for connection in list(self._connections)
            if connection.is_connected and (connection.host, connection.port) != primary
        ]
        if not stale:
            return
        log.warning(
            "sentinels switched %s to %s:%d; closing %d connections so they find it",
            self._service, *primary, len(stale),
        )  # fmt: skip
        await asyncio.gather(
            *(connection.disconnect(nowait=True) for connection in stale), return_exceptions=True
        )

    async def _listen(self, host: str, port: int) -> None:
        failures = 0
        while True:
            try:
                await self._follow(host, port)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                level = logging.WARNING if isinstance(exc, AuthenticationError) else logging.INFO
                log.log(level, "sentinel %s:%d watch lost (%s); again", host, port, exc)
            except Exception:  # whatever it was, the watch lives on and tries again
                log.exception("sentinel %s:%d watch failed; again", host, port)
            failures += 1
            await asyncio.sleep(full_jitter(failures, base=0.2, cap=5.0))

    async def _follow(self, host: str, port: int) -> None:
        """One connection's subscription, until it fails or stays silent past a ping."""
        async with (
            aioredis.Redis(host=host, port=port, **self._kwargs) as sentinel,
            sentinel.pubsub(ignore_subscribe_messages=True) as pubsub,
        ):
            async with asyncio.timeout(IDLE_PING_S):  # a paused sentinel answers nothing
                await pubsub.subscribe(CHANNEL)
            unanswered = False
            while True:
                message = await pubsub.get_message(timeout=IDLE_PING_S)
                if message is None:
                    if unanswered:
                        raise TimeoutError(f"no answer to a ping in {IDLE_PING_S} s")
                    await pubsub.ping()
                    unanswered = True
                    continue
                unanswered = False
                if message["type"] == "message":
                    data = message["data"]
                    await self.switched(data.decode() if isinstance(data, bytes) else str(data))


def watch_of(client: Any) -> SwitchWatch | None:
    """``client``'s watch: a Sentinel client has one (``delineate.redis.client``)."""
    return getattr(getattr(client, "connection_pool", None), "switch_watch", None)


async def stop_watch(client: Any) -> None:
    """Stop ``client``'s watch, if it has one."""
    watch = watch_of(client)
    if watch is not None:
        with contextlib.suppress(Exception):
            await watch.stop()

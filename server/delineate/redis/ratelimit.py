"""The fixed-window rate limit counted in Redis, so N replicas enforce one limit, not N.

One ``INCR`` + ``PEXPIRE`` per request, in one round trip. While Redis cannot be reached the
replica counts on its own (the in-process limiter) rather than refusing or waving everyone
through: the limit degrades to per-replica, the API keeps answering.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from delineate.ratelimit import Decision, FixedWindowLimiter, decide, window_start
from delineate.redis import keys as keys

log = logging.getLogger("delineate.ratelimit")


class RedisWindowLimiter:
    def __init__(self, client: aioredis.Redis, limit: int, window_s: float) -> None:
        self._redis: Any = client
        self.limit, self.window_s = limit, window_s
        self._fallback = FixedWindowLimiter(limit, window_s)
        self._degraded = False

    async def hit(self, client: str, now: float) -> Decision:
        start = window_start(now, self.window_s)
        key = keys.rate_window(client, int(start * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(self.window_s * 1000) + 1000, nx=True)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            if not self._degraded:
                log.warning("rate limit counts per replica while redis is unavailable: %s", exc)
                self._degraded = True
            return self._fallback.hit_now(client, now)
        self._degraded = False
        return decide(self.limit, self.window_s, start, int(count), now)

"""The dashboard's shared state in Redis: a hash of heartbeats (one field per replica), two
capped lists (LPUSH + LTRIM), and a list of spans per trace that expires after an hour."""

from __future__ import annotations

from typing import TYPE_CHECKING

from delineate.ops.store import SPANS_PER_TRACE, TRACE_TTL_S, OpsStore
from delineate.redis import keys as redis_keys
from delineate.redis.errors import unavailable_on_disconnect

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class RedisOpsStore(OpsStore):
    def __init__(self, client: aioredis.Redis, *, keep: int, traces: int) -> None:
        super().__init__(keep=keep, traces=traces)
        self._redis = client

    @unavailable_on_disconnect
    async def beat(self, replica: str, beat: bytes) -> None:
        await self._redis.hset(redis_keys.OPS_REPLICAS, replica, beat)

    @unavailable_on_disconnect
    async def beats(self) -> list[bytes]:
        found = await self._redis.hgetall(redis_keys.OPS_REPLICAS)
        return [bytes(v) for v in found.values()]  # type: ignore[arg-type]

    @unavailable_on_disconnect
    async def forget(self, replica: str) -> None:
        await self._redis.hdel(redis_keys.OPS_REPLICAS, replica)

    @unavailable_on_disconnect
    async def push(self, jobs: list[bytes], errors: list[bytes]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, items in ((redis_keys.OPS_JOBS, jobs), (redis_keys.OPS_ERRORS, errors)):
                if items:
                    pipe.lpush(key, *items)
                    pipe.ltrim(key, 0, self.keep - 1)
            await pipe.execute()

    @unavailable_on_disconnect
    async def recent(self) -> tuple[list[bytes], list[bytes]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lrange(redis_keys.OPS_JOBS, 0, self.keep - 1)
            pipe.lrange(redis_keys.OPS_ERRORS, 0, self.keep - 1)
            jobs, errors = await pipe.execute()
        return jobs, errors

    @unavailable_on_disconnect
    async def add_spans(self, spans: dict[str, list[bytes]]) -> None:
        if not spans:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, items in spans.items():
                key = redis_keys.ops_trace(trace_id)
                pipe.rpush(key, *items)
                pipe.ltrim(key, 0, SPANS_PER_TRACE - 1)
                pipe.expire(key, TRACE_TTL_S)
            await pipe.execute()

    @unavailable_on_disconnect
    async def spans(self, trace_id: str) -> list[bytes]:
        found = await self._redis.lrange(redis_keys.ops_trace(trace_id), 0, -1)
        return [bytes(v) for v in found]  # type: ignore[arg-type]

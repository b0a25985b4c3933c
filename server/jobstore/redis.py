"""Redis job store: records every replica can read, and a durable queue with leases.

- A record is one key (msgpack), kept ``retention_s`` after its last write.
- Idempotency keys are ``SET NX`` keys naming the job they created.
- The queue is a Stream read through a consumer group: each replica's workers take entries
  with XREADGROUP. A taken entry stays pending (leased) until ``ack``; the store renews the
  lease (XCLAIM to itself, which resets the idle time) while the job runs. When a replica
  dies its entries stop being renewed, and after ``lease_ms`` any other worker reclaims them
  with XAUTOCLAIM and runs the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError

from server import redis_keys as keys
from server.frames import JobStatus
from server.jobs.state import JobRecord
from server.jobstore.base import JobStore
from server.redis_errors import unavailable_on_disconnect

log = logging.getLogger("delineate.jobstore")

encode_record = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(JobRecord).decode
BLOCK_MS = 1000

# KEYS[1] the owner's active set; ARGV: now ms, lapse ms, limit, job id. Entries lapse after
# the retention period, so a slot of a job whose record vanished is not held forever.
CLAIM_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""


class RedisJobStore(JobStore):
    name = "redis"
    health_key = "redis"

    def __init__(self, client: aioredis.Redis, *, retention_s: int, lease_ms: int) -> None:
        # Any: redis-py types every reply as a bytes | str | int union; we decode at the edge.
        self._redis: Any = client
        self._retention_s = retention_s
        self._lease_ms = lease_ms
        self.consumer = f"replica-{uuid.uuid4().hex[:12]}"
        self._leases: dict[str, tuple[bytes, asyncio.Task[None]]] = {}
        self._claim_slot = self._redis.register_script(CLAIM_SLOT)

    async def start(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self._redis.xgroup_create(
                keys.JOB_QUEUE, keys.WORKER_GROUP, id="0", mkstream=True
            )

    async def stop(self) -> None:
        for _, renewer in self._leases.values():
            renewer.cancel()
        self._leases.clear()

    # --- records -----------------------------------------------------------------------

    @unavailable_on_disconnect
    async def create(self, record: JobRecord, idempotency_key: str | None) -> JobRecord:
        job_id = record.job.job_id
        if idempotency_key is not None:
            claimed = await self._redis.set(
                keys.idempotency(idempotency_key), job_id, nx=True, ex=self._retention_s
            )
            if not claimed:
                existing = await self._redis.get(keys.idempotency(idempotency_key))
                found = await self.get(existing.decode()) if existing else None
                if found is not None:
                    return found
        # One round trip for both: initiate answers sooner under load.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.job_record(job_id), encode_record(record), ex=self._retention_s)
            pipe.xadd(keys.JOB_QUEUE, {"job": job_id})
            await pipe.execute()
        return record

    @unavailable_on_disconnect
    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self._redis.get(keys.job_record(job_id))
        return None if raw is None else _decode(raw)

    @unavailable_on_disconnect
    async def save(self, record: JobRecord, *, expect: JobStatus | None = None) -> bool:
        key = keys.job_record(record.job.job_id)
        release = record.quota if record.job.status.is_terminal else None
        if expect is None:
            if release is None:
                await self._redis.set(key, encode_record(record), ex=self._retention_s)
                return True
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, encode_record(record), ex=self._retention_s)
                pipe.zrem(keys.active_jobs(release), record.job.job_id)
                await pipe.execute()
            return True
        async with self._redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = await pipe.get(key)
                if current is None or _decode(current).job.status is not expect:
                    return False
                pipe.multi()
                pipe.set(key, encode_record(record), ex=self._retention_s)
                if release is not None:
                    pipe.zrem(keys.active_jobs(release), record.job.job_id)
                await pipe.execute()
            except WatchError:
                return False
        return True

    # --- active-job slots ----------------------------------------------------------------

    @unavailable_on_disconnect
    async def claim_slot(self, quota: str, job_id: str, limit: int) -> bool:
        now_ms = int(time.time() * 1000)
        lapse_ms = now_ms + self._retention_s * 1000
        args: list[int | str] = [now_ms, lapse_ms, limit, job_id]
        return bool(await self._claim_slot(keys=[keys.active_jobs(quota)], args=args))

    @unavailable_on_disconnect
    async def release_slot(self, quota: str, job_id: str) -> None:
        await self._redis.zrem(keys.active_jobs(quota), job_id)

    # --- the queue ---------------------------------------------------------------------

    @unavailable_on_disconnect
    async def enqueue(self, job_id: str) -> None:
        await self._redis.xadd(keys.JOB_QUEUE, {"job": job_id})

    @unavailable_on_disconnect
    async def take(self) -> str:
        while True:
            entry = await self._reclaim() or await self._read_new()
            if entry is not None:
                entry_id, job_id = entry
                renewer = asyncio.create_task(self._renew(entry_id), name=f"lease-{job_id}")
                self._leases[job_id] = (entry_id, renewer)
                return job_id

    async def _reclaim(self) -> tuple[bytes, str] | None:
        """An entry whose worker stopped renewing its lease (its replica died)."""
        _, claimed, *_ = await self._redis.xautoclaim(
            keys.JOB_QUEUE, keys.WORKER_GROUP, self.consumer, self._lease_ms, "0-0", count=1
        )
        for entry_id, fields in claimed:
            if fields:  # a deleted entry comes back with no fields
                log.info("reclaimed job %s from a lapsed lease", fields[b"job"].decode())
                return entry_id, fields[b"job"].decode()
            await self._redis.xack(keys.JOB_QUEUE, keys.WORKER_GROUP, entry_id)
        return None

    async def _read_new(self) -> tuple[bytes, str] | None:
        reply = await self._redis.xreadgroup(
            keys.WORKER_GROUP, self.consumer, {keys.JOB_QUEUE: ">"}, count=1, block=BLOCK_MS
        )
        for _, entries in reply or []:
            for entry_id, fields in entries:
                return entry_id, fields[b"job"].decode()
        return None

    async def _renew(self, entry_id: bytes) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self._redis.xclaim(
                    keys.JOB_QUEUE, keys.WORKER_GROUP, self.consumer, 0, [entry_id], justid=True
                )
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (will retry): %s", exc)

    @unavailable_on_disconnect
    async def ack(self, job_id: str) -> None:
        lease = self._leases.pop(job_id, None)
        if lease is None:
            return
        entry_id, renewer = lease
        renewer.cancel()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(keys.JOB_QUEUE, keys.WORKER_GROUP, entry_id)
            pipe.xdel(keys.JOB_QUEUE, entry_id)
            await pipe.execute()

    @unavailable_on_disconnect
    async def queued(self) -> int:
        return int(await self._redis.xlen(keys.JOB_QUEUE))

    async def check(self) -> bool:
        return bool(await self._redis.ping())

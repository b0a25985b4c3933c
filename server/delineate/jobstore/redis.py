"""Redis job store: records every replica can read, and a durable queue with leases.

- A job is one hash (``redis_keys.job``): the msgpack record and the head fields guarded
  writes check, kept ``retention_s`` after its last write.
- ``create`` writes the job and its Idempotency-Key (scoped to the owner, naming the job) in
  one script: a key without its job, or two jobs for one key, cannot be. The job's id is
  derived from the key (``redis_keys.idempotent_tag``), so both share a Cluster slot.
  On one node the same script adds the queue entry. On a Cluster the queue is elsewhere:
  the entry is added first, then the job; a worker that takes an entry whose job does not
  exist waits up to ``ORPHAN_WAIT_S`` for it (its creator is usually one round trip behind),
  then marks the job id orphaned in the job's slot and drops the entry (the creator died,
  lost the key to a concurrent request, or is still retrying through a failover of the
  job's shard). The creation script refuses an orphaned id (503: the client tries again).
  So a job without an entry cannot be, and an entry without a job is dropped.
- The queue is ``partitions`` Streams (hash-tagged, spread over the slots), a job's entry in
  the one its id picks, each read through a consumer group: each replica's workers take
  entries from all of them in turn with XREADGROUP. A taken entry stays pending (leased)
  until ``ack``; the store renews the lease (XCLAIM to itself, which resets the idle time)
  while the job runs. When a replica dies its entries stop being renewed, and after
  ``lease_ms`` any other worker reclaims them with XAUTOCLAIM and runs the job again.
  ``ORPHAN_GRACE_MS`` and the wait are about the entry's age, not a job's: a lapsed lease
  reclaimed long after is dropped at once when its job is gone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from delineate.errors import BackendUnavailable, Conflict
from delineate.jobstore.base import JobStore
from delineate.record import Head, JobRecord
from delineate.redis import keys as keys
from delineate.redis.client import command_retry, is_cluster
from delineate.redis.cluster import pipe_of
from delineate.redis.errors import unavailable_on_disconnect
from delineate_protocol.frames import JobStatus

log = logging.getLogger("delineate.jobstore")

encode_record = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(JobRecord).decode
BLOCK_MS = 1000
MIN_BLOCK_MS = 100
ORPHAN_GRACE_MS = 5000
"""An entry this old whose job does not exist has no creator still coming."""
ORPHAN_WAIT_S = 1.0
CLUSTER_PARTITIONS = 6
"""Partitions on a Cluster when QUEUE_PARTITIONS is 0 (auto); one node gets one."""
CONSUMING_WITHIN_S = 10.0
"""A dispatcher whose takes have not reached the queue for this long is not consuming."""

# KEYS[1] the owner's active set; ARGV: now ms, lapse ms, limit, job id. Entries lapse after
# the retention period, so a slot of a job whose record vanished is not held forever.
CLAIM_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""

# KEYS: job hash, queue stream, orphan mark[, idempotency key]; ARGV: job id, record,
# retention s, epoch. Returns the id of the job the key names when it names one already,
# else the new job's; nil when the id was marked orphaned (its entry is gone).
CREATE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
if KEYS[4] then
  local existing = redis.call('GET', KEYS[4])
  if existing then return existing end
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'fence', 0, 'epoch', ARGV[4], 'seq', 0,
  'rec', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[2] ~= KEYS[1] then redis.call('XADD', KEYS[2], '*', 'job', ARGV[1]) end
return ARGV[1]
"""
# On a Cluster the queue stream is in another slot: CREATE is called with the job's own key
# in its place (no entry added; ``create`` added it first).

# KEYS: the job's hash, its orphan mark; ARGV: seconds the mark lasts. 1 when the job
# exists; else marks it orphaned (its creation, still coming, will be refused) and 0.
MARK_ORPHAN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
redis.call('SET', KEYS[2], 1, 'EX', ARGV[1])
return 0
"""


# KEYS: the queue[, the job's hash]; ARGV: group, consumer, entry id, "renew", "release" or
# "drop" (release unless the job exists: KEYS[2] is on the queue's node). Only while the
# entry is still this consumer's: a worker paused past its lease must neither take the entry
# back from the worker that took it over, nor ack it away under that worker.
LEASE = """
if ARGV[4] == 'drop' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'renew' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
else
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
end
return 1
"""


async def _ignore(error: Exception) -> None:
    """A failed attempt needs no clean-up: the pipe dropped its connection already."""


def head_from_reply(fields: Sequence[bytes | None]) -> Head:
    """The head from ``HMGET status fence epoch seq attempt`` (or the journal script's
    answer); a job stored before attempts had tokens has none."""
    status, fence, epoch, seq, attempt = (field or b"" for field in fields)
    return Head(JobStatus(status.decode()), int(fence), epoch.decode(), int(seq), attempt.decode())


def is_nogroup(exc: ResponseError) -> bool:
    """The queue or its consumer group is gone (a Redis that came back empty)."""
    return str(exc).startswith("NOGROUP")


class RedisJobStore(JobStore):
    name = "redis"
    health_key = "redis"

    def __init__(
        self, client: aioredis.Redis, *, retention_s: int, lease_ms: int, partitions: int = 0
    ) -> None:
        # Any: redis-py types every reply as a bytes | str | int union; we decode at the edge.
        self._redis: Any = client
        self._cluster = is_cluster(client)
        self._retention_s = retention_s
        self._lease_ms = lease_ms
        self._partition_count = partitions or (CLUSTER_PARTITIONS if self._cluster else 1)
        self.partitions = keys.queue_partitions(self._partition_count)
        self._turn = 0
        self._reclaim_turn = 0
        self.consumer = f"replica-{uuid.uuid4().hex[:12]}"
        # Per job taken: its partition, entry id and lease renewer.
        self._leases: dict[str, tuple[str, bytes, asyncio.Task[None]]] = {}
        self._taken: collections.deque[str] = collections.deque()
        """Jobs read and leased but not handed to a worker yet (a read may return several)."""
        self.orphans_dropped = 0
        self.stale_reads = 0
        """Taken jobs a read missed that the queue's node has (``drop_missing``)."""
        self._pipe = pipe_of(client)
        self._reads = command_retry()
        self._claim_slot = self._redis.register_script(CLAIM_SLOT)
        self._create = self._redis.register_script(CREATE)
        self._mark_orphan = self._redis.register_script(MARK_ORPHAN)
        self._lease = self._redis.register_script(LEASE)
        self.polled_at = time.monotonic()
        """When the queue last answered this replica's dispatcher (for /health)."""

    async def start(self) -> None:
        await self._create_group()

    async def _create_group(self) -> None:
        for queue in self.partitions:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
                await self._redis.xgroup_create(queue, keys.WORKER_GROUP, id="0", mkstream=True)

    async def stop(self) -> None:
        for _, _, renewer in self._leases.values():
            renewer.cancel()
        self._leases.clear()
        self._taken.clear()
        await self._pipe.aclose()

    def new_job_id(self, idempotency_key: str | None, *, scope: str | None = None) -> str:
        job_id = str(uuid.uuid4())
        if idempotency_key is None:
            return job_id
        return keys.idempotent_tag(scope, idempotency_key) + job_id[keys.TAG_LENGTH :]

    # --- records -----------------------------------------------------------------------

    @unavailable_on_disconnect
    async def create(
        self, record: JobRecord, idempotency_key: str | None, *, scope: str | None = None
    ) -> JobRecord:
        job_id = record.job.job_id
        queue = keys.queue_of(job_id, self._partition_count)
        entry = await self._redis.xadd(queue, {"job": job_id}) if self._cluster else None
        created = await self._add_job(record, idempotency_key, scope)
        if created == job_id:
            return record
        if entry is not None:  # the key named a job already: ours will never exist
            with contextlib.suppress(RedisError):
                await self._redis.xdel(queue, entry)
        found = await self.get(created)
        if found is None:  # the job ended and expired before its key: a new key is needed
            raise Conflict("this Idempotency-Key belongs to a job that no longer exists")
        return found

    async def _add_job(
        self, record: JobRecord, idempotency_key: str | None, scope: str | None
    ) -> str:
        """The CREATE script: the id of the job ``idempotency_key`` names (this one's when
        it is new). On a Cluster the entry was added before; when a worker has dropped it
        meanwhile (this creation was delayed), the job is refused: 503, try again."""
        job = record.job
        queue = (
            keys.job(job.job_id)
            if self._cluster
            else keys.queue_of(job.job_id, self._partition_count)
        )
        script_keys = [keys.job(job.job_id), queue, keys.job_orphaned(job.job_id)]
        if idempotency_key is not None:
            script_keys.append(keys.idempotency(scope, idempotency_key))
        args: list[str | int | bytes] = [
            job.job_id,
            encode_record(record),
            self._retention_s,
            job.epoch,
        ]
        reply = await self._create(keys=script_keys, args=args)
        if reply is None:
            raise BackendUnavailable("the job queue was failing over; try again")
        return str(reply.decode())

    @unavailable_on_disconnect
    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self._hash_read(keys.job(job_id), "HGET", "rec")
        return None if raw is None else _decode(raw)

    @unavailable_on_disconnect
    async def head(self, job_id: str) -> Head | None:
        fields = await self._hash_read(
            keys.job(job_id), "HMGET", "status", "fence", "epoch", "seq", "attempt"
        )
        return None if fields[0] is None else head_from_reply(fields)

    async def _hash_read(self, key: str, command: str, *args: str) -> Any:
        # Through the pipe: every subscriber's handshake reads its job's record, and a
        # burst of them (a replica's sockets reconnecting at once) then shares a few writes
        # to Redis instead of a pool checkout and a round trip each. A read is safe to send
        # again, so a lost connection is retried as the client retries.
        return await self._reads.call_with_retry(
            lambda: self._pipe.call_for(key, command, key, *args), _ignore
        )

    @unavailable_on_disconnect
    async def save(self, record: JobRecord) -> None:
        job = record.job
        key = keys.job(job.job_id)
        fields = {
            "status": job.status.value, "fence": record.fence, "epoch": job.epoch,
            "seq": job.seq, "attempt": record.attempt, "rec": encode_record(record),
        }  # fmt: skip
        release = job.status.is_terminal and record.quota is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._retention_s)
            if release and not self._cluster:
                pipe.zrem(keys.active_jobs(record.quota or ""), job.job_id)
            await pipe.execute()
        if release and self._cluster:  # another slot: after the record (see the journal)
            await self._redis.zrem(keys.active_jobs(record.quota or ""), job.job_id)

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
        await self._redis.xadd(keys.queue_of(job_id, self._partition_count), {"job": job_id})

    @unavailable_on_disconnect
    async def take(self) -> str:
        while True:
            if self._taken:
                return self._taken.popleft()
            try:
                entries = await self._reclaim() or await self._read_new()
            except ResponseError as exc:
                if str(exc).startswith("UNBLOCKED"):
                    continue  # the partition's slot migrated away under a blocking read
                if not is_nogroup(exc):
                    raise
                log.warning("a job queue's consumer group is gone; creating them again")
                await self._create_group()
                continue
            self.polled_at = time.monotonic()
            for queue, entry_id, job_id in entries:
                if self._cluster and not await self._job_exists(job_id, entry_id):
                    log.info("dropped queue entry %s: job %s was never created", entry_id, job_id)
                    self.orphans_dropped += 1
                    await self._lease_call(queue, entry_id, "release")
                    continue
                renewer = asyncio.create_task(self._renew(queue, entry_id), name=f"lease-{job_id}")
                self._leases[job_id] = (queue, entry_id, renewer)
                self._taken.append(job_id)

    async def _job_exists(self, job_id: str, entry_id: bytes) -> bool:
        """On a Cluster an entry is added before its job: wait for a job still being made;
        give up by marking it orphaned, so that it is never made after its entry is gone."""
        young = time.time() * 1000 - int(entry_id.split(b"-")[0]) < ORPHAN_GRACE_MS
        deadline = time.monotonic() + (ORPHAN_WAIT_S if young else 0)
        while time.monotonic() < deadline:
            if await self._redis.exists(keys.job(job_id)):
                return True
            await asyncio.sleep(0.05)
        return await self._exists_or_orphaned(job_id)

    async def _exists_or_orphaned(self, job_id: str) -> bool:
        job_keys = [keys.job(job_id), keys.job_orphaned(job_id)]
        return bool(await self._mark_orphan(keys=job_keys, args=[self._retention_s]))

    async def _reclaim(self) -> list[tuple[str, bytes, str]]:
        """An entry whose worker stopped renewing its lease (its replica died), from the
        partitions in turn."""
        queue = self.partitions[self._reclaim_turn % len(self.partitions)]
        self._reclaim_turn += 1
        _, claimed, *_ = await self._redis.xautoclaim(
            queue, keys.WORKER_GROUP, self.consumer, self._lease_ms, "0-0", count=1
        )
        for entry_id, fields in claimed:
            if fields:  # a deleted entry comes back with no fields
                log.info("reclaimed job %s from a lapsed lease", fields[b"job"].decode())
                return [(queue, entry_id, fields[b"job"].decode())]
            await self._redis.xack(queue, keys.WORKER_GROUP, entry_id)
        return []

    async def _read_new(self) -> list[tuple[str, bytes, str]]:
        """New entries, every partition in a turning order so none waits behind another."""
        n = len(self.partitions)
        start, self._turn = self._turn, (self._turn + 1) % n
        order = self.partitions[start:] + self.partitions[:start]
        if n == 1 or not self._cluster:
            # One node: one blocking read over every partition.
            replies = [await self._read(order, BLOCK_MS)]
        else:
            # A Cluster refuses a read across slots: each partition without blocking (at
            # once, each on its primary), then a short block on one of them.
            replies = await asyncio.gather(*(self._read([queue], None) for queue in order))
            if not any(replies):
                replies = [await self._read(order[:1], max(MIN_BLOCK_MS, BLOCK_MS // n))]
        taken = [
            (stream.decode(), entry_id, fields[b"job"].decode())
            for reply in replies
            for stream, entries in reply or []
            for entry_id, fields in entries
        ]
        # Oldest first (an entry id starts with its time in ms): first come, first served
        # across partitions too.
        return sorted(taken, key=lambda entry: tuple(map(int, entry[1].split(b"-"))))

    async def _read(self, queues: Sequence[str], block: int | None) -> Any:
        streams = dict.fromkeys(queues, ">")
        return await self._redis.xreadgroup(
            keys.WORKER_GROUP, self.consumer, streams, count=1, block=block
        )

    async def _renew(self, queue: str, entry_id: bytes) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                if not await self._lease_call(queue, entry_id, "renew"):
                    log.warning("lease of queue entry %s lost to another worker", entry_id)
                    return  # the job's fence keeps this worker's writes out
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (will retry): %s", exc)

    async def _lease_call(self, queue: str, entry_id: bytes, action: str, *job_key: str) -> int:
        """The LEASE script's answer (see its comment)."""
        args: list[str | bytes] = [keys.WORKER_GROUP, self.consumer, entry_id, action]
        return int(await self._lease(keys=[queue, *job_key], args=args))

    @unavailable_on_disconnect
    async def ack(self, job_id: str) -> None:
        lease = self._leases.pop(job_id, None)
        if lease is not None:
            await self._release(lease, "release")

    @unavailable_on_disconnect
    async def drop_missing(self, job_id: str) -> bool:
        # Decided where the entry is, not by the read that missed the job: after a Sentinel
        # failover the old primary, back from its own files, answers reads until the
        # sentinels demote it, without the jobs created since; acking their entries on
        # that read stranded them queued for good.
        lease = self._leases.pop(job_id, None)
        if lease is None:
            return True
        if self._cluster:  # the job's slot is elsewhere: ask its primary, then release
            lease[2].cancel()  # first: a failed call must not leave the lease renewed
            missing = not await self._exists_or_orphaned(job_id)
            if missing:
                await self._release(lease, "release")
        else:
            missing = await self._release(lease, "drop", keys.job(job_id)) != -1
        if not missing:
            log.warning("job %s exists but a read missed it; reading afresh", job_id)
            self.stale_reads += 1
            await self._pipe.aclose()  # the next read connects to the primary named now
        return missing

    async def _release(
        self, lease: tuple[str, bytes, asyncio.Task[None]], action: str, *job_key: str
    ) -> int:
        """The LEASE script's answer for a lease this worker gives up (1 when the queue is
        gone with its entry: nothing to give back)."""
        queue, entry_id, renewer = lease
        renewer.cancel()
        try:
            return await self._lease_call(queue, entry_id, action, *job_key)
        except ResponseError as exc:
            if not is_nogroup(exc):
                raise
            return 1

    def abandon(self, job_id: str) -> None:
        lease = self._leases.pop(job_id, None)
        if lease is not None:
            lease[2].cancel()  # the entry stays pending and lapses after lease_ms

    @unavailable_on_disconnect
    async def queued(self) -> int:
        return sum([int(await self._redis.xlen(queue)) for queue in self.partitions])

    async def check(self) -> bool:
        return bool(await self._redis.ping())

    def consuming(self) -> bool:
        return time.monotonic() - self.polled_at < CONSUMING_WITHIN_S

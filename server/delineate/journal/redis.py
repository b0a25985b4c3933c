"""Redis journal: a job's guarded write in one script, one round trip.

The script applies ``delineate.journal.fencing``'s rules in Redis, atomically: the job has not
ended (a terminal status is final), ``expect`` still holds, the writer holds the job's
current fence (or takes the next one when it starts an attempt), and the stored stream
position (epoch, seq) is the one the writer built its frames after. Then it saves the
record and the head fields, appends the frames to the history and publishes them as one
message (a frame per line: a frame's JSON never holds a raw newline), and a terminal frame
gives the owner's active-job slot back. When the position differs, the script answers with
the stored head, ``fencing.reconcile`` moves the writer after it (or to a new epoch when
Redis lost writes), and the write is tried again.

The script goes through ``RedisPipe``: one connection on which concurrent jobs' writes are
pipelined, without redis-py's pool and per-call machinery. On a Cluster, ``ClusterPipe``
keeps one such pipe per primary and sends each write to its job's slot; the frames go out
with SPUBLISH (sharded pub/sub), and the owner's active-job slot (another slot) is given
back by a second call after the script.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from delineate.broker.base import Broker
from delineate.jobstore.base import JobStore
from delineate.jobstore.redis import encode_record, head_from_reply
from delineate.journal import fencing
from delineate.journal.base import BuildFrame, Journal, build_frames
from delineate.journal.fencing import JobEnded, JobLost, StatusMoved, Superseded, WriteMode
from delineate.record import Head, JobRecord, new_epoch
from delineate.redis import keys as keys
from delineate.redis.client import is_cluster
from delineate.redis.cluster import pipe_of
from delineate.redis.errors import unavailable_on_disconnect
from delineate.redis.pipe import PipeScript
from delineate_protocol.frames import AnyFrame, JobStatus, encoder

log = logging.getLogger("delineate.journal")

MAX_TRIES = 8
"""Writes that find the stream moved and try again after it, at most."""

# KEYS: job hash, history stream, channel[, the owner's active jobs].
# ARGV: 1 mode, 2 fence, 3 expected status ('' for none), 4 base epoch, 5 base seq (the
# stored position the frames follow), 6 epoch of the frames, 7 seq of the last frame,
# 8 status, 9 record, 10 retention s, 11 history max frames, 12 job id, 13 attempt token,
# 14.. the frames. Returns {'ok'}, {'lost'}, {'ended', status}, {'status', status},
# {'fenced', fence}, or {'head', status, fence, epoch, seq, attempt} when the stored
# position is not the base.
APPEND = """
local h = redis.call('HMGET', KEYS[1], 'status', 'fence', 'epoch', 'seq', 'attempt')
local mode, fence, attempt = ARGV[1], ARGV[2], ARGV[13]
if not h[1] then
  if mode ~= 'lost' then return {'lost'} end
else
  if mode == 'lost' then return {'status', h[1]} end
  if h[1] == 'completed' or h[1] == 'failed' or h[1] == 'cancelled' then return {'ended', h[1]} end
  if ARGV[3] ~= '' and h[1] ~= ARGV[3] then return {'status', h[1]} end
  if mode == 'worker' and (tonumber(h[2]) ~= tonumber(fence) or (h[5] or '') ~= attempt) then
    return {'fenced', h[2]}
  end
  if mode == 'claim' and tonumber(h[2]) ~= tonumber(fence) - 1 then return {'fenced', h[2]} end
  if mode == 'any' then fence, attempt = h[2], h[5] or '' end
  if h[3] ~= ARGV[4] or tonumber(h[4]) ~= tonumber(ARGV[5]) then
    return {'head', h[1], h[2], h[3], h[4], h[5] or ''}
  end
  if h[3] ~= ARGV[6] then redis.call('DEL', KEYS[2]) end
end
local count = #ARGV - 13
local last = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'status', ARGV[8], 'fence', fence, 'epoch', ARGV[6], 'seq', last,
  'attempt', attempt, 'rec', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[10])
for i = 1, count do
  local id = (last - count + i) .. '-0'
  redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[11], id, 'f', ARGV[13 + i])
end
redis.call('EXPIRE', KEYS[2], ARGV[10])
redis.call('{publish}', KEYS[3], table.concat(ARGV, '\\n', 14))
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[12]) end
return {'ok'}
"""
# On one node a frame goes out with PUBLISH; on a Cluster with SPUBLISH, to the shard of the
# job's slot only (a PUBLISH there is copied to every node of the Cluster).
APPEND_SHARDED = APPEND.replace("'{publish}'", "'SPUBLISH'")
APPEND = APPEND.replace("'{publish}'", "'PUBLISH'")


class RedisJournal(Journal):
    def __init__(
        self,
        client: aioredis.Redis,
        broker: Broker,
        store: JobStore,
        *,
        history_max_frames: int,
        retention_s: int,
    ) -> None:
        super().__init__(broker, store)
        self._cluster = is_cluster(client)
        self._pipe = pipe_of(client)
        self._append = PipeScript(APPEND_SHARDED if self._cluster else APPEND)
        self._history_max = history_max_frames
        self._retention_s = retention_s
        self.retries = 0
        """Writes that found the stream moved and went again (for tests)."""

    async def append_many(
        self,
        record: JobRecord,
        builds: list[BuildFrame],
        *,
        mode: WriteMode = WriteMode.WORKER,
        expect: JobStatus | None = None,
    ) -> list[AnyFrame]:
        job = record.job
        base = (job.epoch, job.seq)
        if mode is WriteMode.LOST:
            base = fencing.reconcile(None, record)
        for _ in range(MAX_TRIES):
            before = job.epoch, job.seq
            if fencing.takes_over(mode, expect):
                job.epoch = new_epoch()
            frames = build_frames(record, builds)
            try:
                reply = await self._write(record, frames, mode, expect, base)
            except BaseException:
                # Not written, or not known to be: a retry starts from the same position
                # (and meets its own write, if it landed, as the stored head).
                job.epoch, job.seq = before
                raise
            if reply is None:
                return frames
            job.epoch, job.seq = before
            base = fencing.reconcile(reply, record)
            self.retries += 1
        raise Superseded(f"job {job.job_id} kept moving")

    @unavailable_on_disconnect
    async def _write(
        self,
        record: JobRecord,
        frames: list[AnyFrame],
        mode: WriteMode,
        expect: JobStatus | None,
        base: tuple[str, int],
    ) -> Head | None:
        """Run the script: None when written, else the stored head it found instead."""
        job = record.job
        script_keys = [keys.job(job.job_id), keys.job_history(job.job_id)]
        script_keys.append(keys.job_channel(job.job_id))
        release = job.status.is_terminal and record.quota is not None
        if release and not self._cluster:
            script_keys.append(keys.active_jobs(record.quota or ""))
        args: list[str | int | bytes] = [
            mode.value, record.fence, expect.value if expect else "", base[0], base[1],
            job.epoch, job.seq, job.status.value, encode_record(record), self._retention_s,
            self._history_max, job.job_id, record.attempt,
            *(encoder.encode(frame) for frame in frames),
        ]  # fmt: skip
        reply = await self._pipe.evalsha(self._append, script_keys, args)
        refusal = _refusal(reply)
        if refusal is None and release and self._cluster:
            # The owner's set is in another slot: given back after the script. Lost with a
            # crash in between, the entry lapses after the retention period.
            active = keys.active_jobs(record.quota or "")
            await self._pipe.call_for(active, "ZREM", active, job.job_id)
        return refusal

    async def aclose(self) -> None:
        await self._pipe.aclose()


def _refusal(reply: list[bytes]) -> Head | None:
    """None for a write; else the head to reconcile with, or the refusal raised."""
    kind = reply[0]
    if kind == b"ok":
        return None
    if kind == b"head":
        return head_from_reply(reply[1:])
    if kind == b"lost":
        raise JobLost("the job's record is gone")
    status = JobStatus(reply[1].decode()) if kind != b"fenced" else None
    if kind == b"ended" and status is not None:
        raise JobEnded(status)
    if kind == b"status" and status is not None:
        raise StatusMoved(status)
    raise fencing.Fenced(f"the job's fence is {reply[1].decode()} now")

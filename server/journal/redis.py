"""Redis journal: a running job's frames in one script, one round trip.

The base journal takes three calls per frame (INCR the seq, SET the record, a pipeline for
history and PUBLISH). Through redis-py each call costs the replica 100-200 us of CPU, and a
job sends a frame per progress interval: measured on a replica running 50 jobs at 2 frames
per second with no subscriber at all, a frame cost about 1 ms of CPU, half of it those calls.

The script does the same writes in the same order, atomically. It needs the seq up front
(the frame and the record carry it), so the journal asks for the one after the last it
wrote, and the script writes only if the job's counter is still there. Otherwise another
writer (a cancel from another replica, a stale worker) wrote a frame in between: nothing is
written, and the base journal's path runs instead, with a fresh seq from the counter.

A frame that ends the job also gives the owner's active-job slot back, in the same script
(as the job store's ``save`` does for a terminal record). Frames that must check the stored
status (``expect``) take the base path: one or two per job. Terminal frames took it too until
the bench showed why not: all of them come at the end, several round trips each, and every
round trip waits behind the end's deliveries on the event loop, so a job's ``completed`` frame
reached its subscribers later than its ``file`` frame by about the same again.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from server import redis_keys as keys
from server.broker.base import Broker
from server.frames import AnyFrame, JobStatus, encoder
from server.jobs.state import JobRecord
from server.jobstore.base import JobStore
from server.jobstore.redis import encode_record
from server.journal.base import BuildFrame, Journal
from server.redis_errors import unavailable_on_disconnect
from server.redis_pipe import PipeScript, RedisPipe

log = logging.getLogger("delineate.journal")

# KEYS: seq counter, record, history stream, channel[, the owner's active jobs].
# ARGV: first seq, record, retention s, history max frames, job id (to leave the 5th key),
# then the frames (consecutive seqs from the first).
# Returns "ok", "refused" (written, but the history already had a later frame), or the
# counter's value when it is not first seq - 1 (nothing written). The frames go out as one
# message, one per line (a frame's JSON never holds a raw newline): a replica delivers them
# together, one write per socket.
APPEND = """
local first = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if last + 1 ~= first then return last end
local count = #ARGV - 5
redis.call('SET', KEYS[1], first + count - 1, 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local refused = false
for i = 1, count do
  local id = (first + i - 1) .. '-0'
  local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', ARGV[4], id, 'f', ARGV[5 + i])
  if type(added) == 'table' and added.err then refused = true end
end
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', KEYS[4], table.concat(ARGV, '\\n', 6))
if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[5]) end
if refused then return 'refused' end
return 'ok'
"""


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
        # The script goes through a pipe of its own: one connection, no pool, no per-call
        # redis-py machinery (see server/redis_pipe.py); other commands use the client.
        self._pipe = RedisPipe(client.connection_pool)
        self._append = PipeScript(APPEND)
        self._history_max = history_max_frames
        self._retention_s = retention_s
        self.fallbacks = 0
        """Frames that found the counter moved and took the base path (for tests)."""
        self.scripted = 0
        """Frames written by the script (for tests)."""

    async def append_many(
        self, record: JobRecord, builds: list[BuildFrame], *, expect: JobStatus | None = None
    ) -> list[AnyFrame]:
        job = record.job
        if expect is None:
            first = job.seq + 1
            frames = [build(job.job_id, first + i) for i, build in enumerate(builds)]
            for frame in frames:
                frame.trace_id = job.trace_id
            previous, job.seq = job.seq, first + len(frames) - 1
            payloads = [encoder.encode(frame) for frame in frames]
            if await self._append_once(record, first, payloads):
                self.scripted += len(frames)
                return frames
            job.seq = previous
            self.fallbacks += 1
        return await super().append_many(record, builds, expect=expect)

    @unavailable_on_disconnect
    async def _append_once(self, record: JobRecord, first: int, payloads: list[bytes]) -> bool:
        job_id = record.job.job_id
        script_keys = [
            keys.job_seq(job_id),
            keys.job_record(job_id),
            keys.job_history(job_id),
            keys.job_channel(job_id),
        ]
        if record.job.status.is_terminal and record.quota is not None:
            script_keys.append(keys.active_jobs(record.quota))
        args: list[str | int | bytes] = [
            first, encode_record(record), self._retention_s, self._history_max, job_id, *payloads,
        ]  # fmt: skip
        reply = await self._pipe.evalsha(self._append, script_keys, args)
        if reply == b"refused":
            log.warning("frames from %s of job %s refused by history", first, job_id)
        return reply in (b"ok", b"refused")

    async def aclose(self) -> None:
        await self._pipe.aclose()

"""Every Redis key and channel name, in one place (the arq habit).

Cluster-ready: every multi-key operation touches keys of one hash tag, so on a Redis Cluster
they live in one slot.

- A job's keys share the tag of its id's first group, ``{<jobId[:8]>}``. A job created with
  an Idempotency-Key gets that group from the owner and key (``idempotent_tag``), so the key
  (``idempotency``) shares the job's slot and one script creates both.
- The queue is ``partitions`` streams, each with a tag of its own picked so the tags spread
  evenly over the slot space (and so over the primaries).
- Single-key globals (rate windows, an owner's active jobs, the control channel) need no
  partner; the owner's set is tagged by owner all the same, so its script stays one-slot.
"""

from __future__ import annotations

import functools
import hashlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "delineate"

CONTROL_CHANNEL = f"{PREFIX}:control"
"""Messages for every replica (cancel a job wherever it runs)."""

WORKER_GROUP = "workers"

TAG_LENGTH = 8
"""A job's tag is its id's first group (8 hex digits of a uuid)."""


def job_tag(job_id: str) -> str:
    return job_id[:TAG_LENGTH]


def idempotent_tag(owner: str | None, key: str) -> str:
    """The first id group of a job made with ``key``: its keys land in the key's slot."""
    return hashlib.sha256(f"{owner or '-'}\0{key}".encode()).hexdigest()[:TAG_LENGTH]


def job(job_id: str) -> str:
    """Hash of one job: ``rec`` (the msgpack record) and the fields guarded writes check:
    ``status``, ``fence``, ``epoch``, ``seq`` (see ``delineate.journal.fencing``)."""
    return f"{PREFIX}:{{{job_tag(job_id)}}}:{job_id}:job"


def job_orphaned(job_id: str) -> str:
    """Set (Cluster) when a worker dropped the job's queue entry because the job did not
    exist: the job's creation, if still on its way, is refused instead of making a job
    that no entry will ever run."""
    return f"{PREFIX}:{{{job_tag(job_id)}}}:{job_id}:orphaned"


def job_channel(job_id: str) -> str:
    return f"{PREFIX}:{{{job_tag(job_id)}}}:{job_id}:frames"


def job_history(job_id: str) -> str:
    return f"{PREFIX}:{{{job_tag(job_id)}}}:{job_id}:history"


def job_id_of_channel(channel: str) -> str:
    return channel.split(":")[2]


def idempotency(owner: str | None, key: str) -> str:
    """An Idempotency-Key is its owner's own: two tenants' equal keys never meet."""
    return f"{PREFIX}:{{{idempotent_tag(owner, key)}}}:idempotency:{owner or '-'}:{key}"


def rate_window(client: str, window_start_ms: int) -> str:
    return f"{PREFIX}:ratelimit:{client}:{window_start_ms}"


def active_jobs(owner: str) -> str:
    """Sorted set of an owner's unfinished jobs (score: when the entry lapses, epoch ms)."""
    return f"{PREFIX}:active:{{{owner}}}"


@functools.cache
def queue_partitions(count: int) -> tuple[str, ...]:
    """The queue's streams: partition i's tag is the first ``q<i>-<n>`` whose slot falls in
    the i-th of ``count`` equal slot ranges, so each primary of an evenly split cluster
    holds its share of the partitions."""
    names = []
    for i in range(count):
        low = i * REDIS_CLUSTER_HASH_SLOTS // count
        high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        n = 0
        while not low <= key_slot(f"q{i}-{n}".encode()) < high:
            n += 1
        names.append(f"{PREFIX}:queue:{{q{i}-{n}}}")
    return tuple(names)


def queue_of(job_id: str, count: int) -> str:
    """The partition a job's entries go to (by the random last group of its id)."""
    return queue_partitions(count)[int(job_id[-8:], 16) % count]


OPS_REPLICAS = f"{PREFIX}:ops:replicas"
"""Hash of the replicas' latest heartbeats (field: replica id), for the dashboard."""

OPS_JOBS = f"{PREFIX}:ops:jobs"
"""Capped list of recently finished jobs, newest first."""

OPS_ERRORS = f"{PREFIX}:ops:errors"
"""Capped list of recent errors of every replica, newest first."""


def ops_trace(trace_id: str) -> str:
    """The kept spans of one trace (the dashboard's waterfall)."""
    return f"{PREFIX}:ops:trace:{trace_id}"

"""What the job store keeps of a job: its record, the head guarded writes check, and the
epoch tokens that name a job's frame stream (pure types; the stores, the journal and the job
service all use them, and none of them owns them)."""

from __future__ import annotations

import secrets

import msgspec

from delineate_protocol.frames import JobSnapshot, JobStatus


class JobRecord(msgspec.Struct, kw_only=True):
    """What the job store keeps: the public document plus server-only fields."""

    job: JobSnapshot
    result_key: str | None = None
    request_id: str | None = None
    traceparent: str | None = None
    """W3C context of the initiating request: the job's span joins that trace anywhere."""
    fingerprint: str = ""
    owner: str | None = None
    """Who created the job when auth is on; only they may see it. None: anyone with the id."""
    quota: str | None = None
    """Whose active-job count this job takes up until it finishes (owner, or client address)."""
    fence: int = 0
    """The number of the job's current attempt: each worker that starts the job takes the
    next one, and the store refuses writes carrying an older one."""
    attempt: str = ""
    """The current attempt's own token (random): a store that lost a claim (a failover) hands
    the same fence number out again, so a worker's writes must carry both."""


class Head(msgspec.Struct, frozen=True):
    """What the store holds of a job for guarded writes."""

    status: JobStatus
    fence: int
    epoch: str
    seq: int
    attempt: str = ""


def head_of(record: JobRecord) -> Head:
    job = record.job
    return Head(status=job.status, fence=record.fence, epoch=job.epoch, seq=job.seq,
                attempt=record.attempt)  # fmt: skip


def new_attempt() -> str:
    """A token for an attempt that starts."""
    return secrets.token_hex(8)


def new_epoch() -> str:
    """A fresh epoch token: random, so replicas that lost every trace of the old one (a Redis
    that came back empty) still never reuse it."""
    return secrets.token_hex(4)

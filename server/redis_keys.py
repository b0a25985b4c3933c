"""Every Redis key and channel name, in one place (the arq habit)."""

from __future__ import annotations

PREFIX = "delineate"

CONTROL_CHANNEL = f"{PREFIX}:control"
"""Messages for every replica (cancel a job wherever it runs)."""

JOB_QUEUE = f"{PREFIX}:queue"
"""Stream of job ids to run, read by the consumer group below."""

WORKER_GROUP = "workers"


def job_channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:frames"


def job_history(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:history"


def job_seq(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:seq"


def job_record(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def idempotency(key: str) -> str:
    return f"{PREFIX}:idempotency:{key}"


def job_id_of_channel(channel: str) -> str:
    return channel.split(":")[2]


def rate_window(client: str, window_start_ms: int) -> str:
    return f"{PREFIX}:ratelimit:{client}:{window_start_ms}"


def active_jobs(owner: str) -> str:
    """Sorted set of an owner's unfinished jobs (score: when the entry lapses, epoch ms)."""
    return f"{PREFIX}:active:{owner}"

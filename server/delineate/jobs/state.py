"""The job state machine and progress arithmetic: pure functions over ``JobSnapshot``.

Legal moves::

    queued ──► processing ──► completed
      │  ▲          │    └──► failed
      │  └──────────┘ (re-queued when a replica hands the job over)
      └──► cancelled ◄┘
      └──► failed

A terminal state is never left; trying raises ``IllegalTransition`` (a 409 to clients).
"""

from __future__ import annotations

from datetime import UTC, datetime

from delineate.errors import Conflict
from delineate.record import new_epoch
from delineate_protocol.codes import ErrorCode
from delineate_protocol.frames import FileProgress, FileState, JobError, JobSnapshot, JobStatus

_LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Conflict):
    code = ErrorCode.ILLEGAL_TRANSITION


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job(job_id: str, file_ids: list[int]) -> JobSnapshot:
    return JobSnapshot(
        job_id=job_id,
        epoch=new_epoch(),
        status=JobStatus.QUEUED,
        total_file_ids=len(file_ids),
        files=[FileProgress(file_id=f) for f in file_ids],
        created_at=utc_now(),
    )


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in _LEGAL[current]


def transition(job: JobSnapshot, target: JobStatus, error: JobError | None = None) -> None:
    """Move ``job`` to ``target`` in place, stamping times; raise if the move is illegal."""
    if not can_transition(job.status, target):
        raise IllegalTransition(
            f"job {job.job_id} is {job.status.value}; cannot become {target.value}"
        )
    job.status = target
    if target is JobStatus.PROCESSING:
        job.started_at = job.started_at or utc_now()
        job.attempt += 1
    elif target.is_terminal:
        job.finished_at = utc_now()
        job.error = error
        if target is JobStatus.COMPLETED:
            job.progress = 100.0


def hand_back(job: JobSnapshot) -> None:
    """Back to the queue (a worker shutting down). Its last write may have been a terminal
    one still in flight: the store's guard decides whether that landed, so the local state
    is reset whatever it says."""
    job.status, job.error = JobStatus.QUEUED, None
    job.finished_at = job.download_url = job.expires_at = None
    reset_progress(job)


def mark_lost(job: JobSnapshot, error: JobError) -> None:
    """The store lost the job: it ends failed, whatever state its holder last knew (even
    a terminal one that never reached the store)."""
    job.status, job.error = JobStatus.FAILED, error
    job.finished_at = utc_now()
    job.download_url = job.expires_at = None


def reset_progress(job: JobSnapshot) -> None:
    """Forget per-attempt progress (a re-run starts the bundle again from the first file)."""
    job.bytes_done = job.bytes_total = job.files_done = 0
    job.progress = 0.0
    for f in job.files:
        f.state, f.available, f.size, f.bytes_done = FileState.PENDING, None, None, 0


def mark_available(job: JobSnapshot, f: FileProgress, size: int) -> None:
    f.available, f.size = True, size
    job.bytes_total += size


def mark_unavailable(f: FileProgress) -> None:
    f.available, f.state = False, FileState.UNAVAILABLE


def add_bytes(job: JobSnapshot, f: FileProgress, n: int) -> None:
    f.state = FileState.PROCESSING
    f.bytes_done += n
    job.bytes_done += n
    job.progress = percent(job.bytes_done, job.bytes_total)


def mark_done(job: JobSnapshot, f: FileProgress) -> None:
    f.state = FileState.DONE
    job.files_done += 1


def percent(done: int, total: int) -> float:
    """0-100 with one decimal; 100 only when everything is done (never rounds up to it)."""
    if total <= 0:
        return 0.0
    value = int(done * 1000 / total) / 10
    return min(value, 100.0)

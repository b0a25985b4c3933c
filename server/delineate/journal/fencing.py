"""Which writes to a job the store accepts: fencing, final terminal states, epochs (pure).

Every write of a job's frames is guarded. The job store keeps a small ``Head`` per job
(status, fence, epoch, seq) next to the record, and a write goes through only if:

- the job has not ended: a terminal status is final, whoever writes;
- ``expect`` (if given) is still the stored status;
- the writer's mode allows it: a ``WORKER`` must hold the current fence and attempt token (a
  worker that lost its lease to another replica is refused, and so is one whose claim a
  failover dropped, after another worker claimed the same fence number), a worker starting
  an attempt (``CLAIM``) takes the next fence with a new token, ``ANY`` (a cancel) checks
  only the first two, and ``LOST`` writes a job whose record the store no longer has (its
  tombstone);
- the writer's view of the stream (epoch, seq) is the stored one; if not, ``reconcile``
  decides where its frames go and the write is tried again.

A takeover (``takes_over``) writes its frames in a new epoch, after the stored position.

The Redis journal's script applies the same rules in Redis; the memory journal calls these.
"""

from __future__ import annotations

import enum

from delineate.record import Head, JobRecord, new_epoch
from delineate_protocol.frames import JobStatus


class WriteMode(enum.Enum):
    WORKER = "worker"
    CLAIM = "claim"
    ANY = "any"
    LOST = "lost"


class Superseded(Exception):
    """The stored job moved on before this write; nothing was written."""


class JobEnded(Superseded):
    def __init__(self, status: JobStatus) -> None:
        super().__init__(f"the job is already {status.value}")
        self.status = status


class StatusMoved(Superseded):
    def __init__(self, status: JobStatus) -> None:
        super().__init__(f"the job is {status.value} now")
        self.status = status


class Fenced(Superseded):
    """Another attempt owns the job: this worker lost its lease."""


class JobLost(Superseded):
    """The store no longer has the job (it expired, or the store lost its data)."""


def check(head: Head | None, record: JobRecord, mode: WriteMode, expect: JobStatus | None) -> None:
    """Raise the refusal a write by ``record``'s holder meets, if any."""
    if head is None:
        if mode is not WriteMode.LOST:
            raise JobLost(f"no record of job {record.job.job_id}")
        return
    if mode is WriteMode.LOST:
        raise StatusMoved(head.status)  # the job is back: whoever wrote it carries on
    if head.status.is_terminal:
        raise JobEnded(head.status)
    if expect is not None and head.status is not expect:
        raise StatusMoved(head.status)
    if mode is WriteMode.WORKER and (head.fence, head.attempt) != (record.fence, record.attempt):
        raise Fenced(f"attempt {record.fence} of job {record.job.job_id} is stale")
    if mode is WriteMode.CLAIM and head.fence != record.fence - 1:
        raise Fenced(f"attempt {record.fence} of job {record.job.job_id} was taken")


def matches(head: Head | None, record: JobRecord) -> bool:
    """Is the writer's view of the stream the stored one (frames go right after it)?"""
    if head is None:
        return False  # nothing stored: a tombstone starts a new epoch (``reconcile``)
    return head.epoch == record.job.epoch and head.seq == record.job.seq


def reconcile(head: Head | None, record: JobRecord) -> tuple[str, int]:
    """Move ``record``'s stream position to where its next frames belong; return the stored
    (epoch, seq) the write must find.

    - Another writer got in first (a later seq, or another epoch): go on after it.
    - The store is behind the writer in the same epoch, or has nothing at all: it lost
      writes its readers may have seen, so the frames start a new epoch (the seq goes on
      counting) and every watcher is moved to it instead of dropping them as duplicates."""
    job = record.job
    if head is None:
        job.epoch = new_epoch()
        return "", 0
    if head.epoch != job.epoch or head.seq > job.seq:
        job.epoch, job.seq = head.epoch, head.seq
    elif head.seq < job.seq:
        job.epoch = new_epoch()
    return head.epoch, head.seq


def takes_over(mode: WriteMode, expect: JobStatus | None) -> bool:
    """Does this write start an attempt on a job another attempt was processing? Its frames
    start a new epoch: the attempt it replaces may have published frames the store no longer
    has (a failover that dropped its last acknowledged writes), at the very seqs this
    attempt would take, and watchers that saw them would drop the new ones as duplicates."""
    return mode is WriteMode.CLAIM and expect is JobStatus.PROCESSING

"""The JobStore interface: job records, idempotency keys and the queue of work.

One module per backend: ``memory`` (one process) and ``redis`` (shared by replicas).
The job service owns the policy; a store only keeps and hands out records.
"""

from __future__ import annotations

import abc

from server.frames import JobStatus
from server.jobs.state import JobRecord


class JobStore(abc.ABC):
    name: str = "jobstore"
    health_key: str | None = None
    """The /health check this backend reports under (None: nothing to check)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def create(self, record: JobRecord, idempotency_key: str | None) -> JobRecord:
        """Store a new record and queue the job for a worker; or return the record already
        created under ``idempotency_key`` (that job is not queued again)."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def save(self, record: JobRecord, *, expect: JobStatus | None = None) -> bool:
        """Write the record (kept for the retention period after its last write).

        With ``expect``, write only if the stored record is still in that status, atomically;
        return whether it was written. That settles a cancel racing a worker's start."""

    @abc.abstractmethod
    async def claim_slot(self, quota: str, job_id: str, limit: int) -> bool:
        """Count ``job_id`` as one of ``quota``'s active jobs if it has fewer than ``limit``,
        atomically; return whether it was counted. ``save`` of the record in a terminal
        status gives the slot back (``release_slot`` for a job that was never stored)."""

    @abc.abstractmethod
    async def release_slot(self, quota: str, job_id: str) -> None: ...

    @abc.abstractmethod
    async def enqueue(self, job_id: str) -> None: ...

    @abc.abstractmethod
    async def take(self) -> str:
        """Wait for the next queued job id and hand it to this worker."""

    @abc.abstractmethod
    async def ack(self, job_id: str) -> None:
        """The worker is done with the job (whatever its outcome)."""

    @abc.abstractmethod
    async def queued(self) -> int: ...

    async def check(self) -> bool:
        return True

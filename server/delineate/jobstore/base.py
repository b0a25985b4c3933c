"""The JobStore interface: job records, idempotency keys and the queue of work.

One module per backend: ``memory`` (one process) and ``redis`` (shared by replicas).
The job service owns the policy; a store only keeps and hands out records.
"""

from __future__ import annotations

import abc
import uuid

from delineate.record import Head, JobRecord


class JobStore(abc.ABC):
    name: str = "jobstore"
    health_key: str | None = None
    """The /health check this backend reports under (None: nothing to check)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def new_job_id(self, idempotency_key: str | None, *, scope: str | None = None) -> str:
        """A fresh job id (a lowercase uuid4). The Redis store derives the first group from
        ``scope`` and ``idempotency_key``, so the key and the job share a Cluster slot."""
        return str(uuid.uuid4())

    @abc.abstractmethod
    async def create(
        self, record: JobRecord, idempotency_key: str | None, *, scope: str | None = None
    ) -> JobRecord:
        """Store a new record and queue the job for a worker, in one atomic step with the
        ``idempotency_key`` of ``scope`` (the owner); or return the record already created
        under that key (that job is not queued again)."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def head(self, job_id: str) -> Head | None:
        """The fields guarded writes check (``delineate.journal.fencing``); None: no such job."""

    @abc.abstractmethod
    async def save(self, record: JobRecord) -> None:
        """Write the record (kept for the retention period after its last write), unguarded:
        the journal checks first. A terminal record gives its active-job slot back."""

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

    async def drop_missing(self, job_id: str) -> bool:
        """Give back a taken job that a read found missing (it expired, was cancelled
        away, or Redis lost it), unless the store has it after all: then the entry lapses
        as ``abandon`` leaves it, and a worker takes the job again. False when the store has
        the job."""
        await self.ack(job_id)
        return True

    def abandon(self, job_id: str) -> None:
        """The worker lost its backend mid-job: stop holding the job without giving it back,
        so its lease lapses and a worker takes it again (a store that cannot lose its
        backend has nothing to do)."""

    @abc.abstractmethod
    async def queued(self) -> int: ...

    async def check(self) -> bool:
        return True

    def consuming(self) -> bool:
        """Whether the queue answered this replica's last takes (see ``JobService``)."""
        return True

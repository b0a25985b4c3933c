"""The job service: what the API asks of jobs. Admission (``create``: idempotency, the
owner's active-job cap, the bundle-size cap, then the job queued), the job handle (``get``,
``snapshot``, who may see a job), ``cancel`` wherever the job runs, and a lost job's end.
Running jobs is the worker's (``jobs.worker``): this replica's slots, fed from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from delineate.errors import (
    BackendUnavailable,
    Conflict,
    JobStateConflict,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StorageError,
)
from delineate.jobs import state
from delineate.jobs.emitter import FrameEmitter, Superseded, WriteMode
from delineate.jobs.runner import (
    LOST_ERROR,
    RunnerConfig,
    bundle_too_large,
    delete_bundles,
    iso,
    source_sizes,
)
from delineate.jobs.worker import CancelSignal, Worker, encode_signal
from delineate.journal.base import Journal
from delineate.record import JobRecord
from delineate.storage.base import Storage
from delineate_protocol.frames import CancelledFrame, FailedFrame, JobSnapshot, JobStatus

if TYPE_CHECKING:
    from delineate.http.auth import Principal

log = logging.getLogger("delineate.jobs")


CANCEL_TRIES = 5
SIZE_CHECK_DEADLINE_S = 2.0
"""How long initiate waits for the store's sizes of the files asked for. A healthy store
answers in milliseconds; a hung one holds each HEAD for its read timeout, retried, for longer
than the request may take. Past this, the job is accepted and its runner checks the cap."""
ACTIVE_CAP_RETRY_AFTER_S = 5
"""No one knows when a job will finish; this is how soon asking again makes sense."""


def fingerprint(file_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, file_ids)).encode()).hexdigest()


class JobService:
    def __init__(
        self,
        *,
        storage: Storage,
        journal: Journal,
        config: RunnerConfig,
        worker: Worker,
        max_active_per_owner: int = 0,
    ) -> None:
        self._storage, self._journal = storage, journal
        self._broker, self._store = journal.broker, journal.store
        self._config = config
        self._max_active = max_active_per_owner
        self.worker = worker

    # The replica's lifecycle, and its broker and dashboard hooks, are the worker's.

    async def start(self) -> None:
        await self.worker.start()

    async def stop(self) -> None:
        """Stop taking work; hand running jobs back to the queue."""
        await self.worker.stop()

    @property
    def running(self) -> int:
        return self.worker.running

    def dispatching(self) -> bool:
        return self.worker.dispatching()

    def on_signal(self, payload: bytes) -> None:
        self.worker.on_signal(payload)

    @property
    def on_job(self) -> Callable[[JobRecord], None]:
        return self.worker.on_job

    @on_job.setter
    def on_job(self, hook: Callable[[JobRecord], None]) -> None:
        self.worker.on_job = hook

    # --- API ---------------------------------------------------------------------------

    async def create(
        self,
        file_ids: list[int],
        *,
        idempotency_key: str | None,
        request_id: str | None,
        trace_id: str | None = None,
        traceparent: str | None = None,
        owner: str | None = None,
        quota: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Create and queue a job; return (record, created).

        409 on a reused key, 422 when the files exceed MAX_BUNDLE_BYTES, 429 when ``quota``
        (the owner, or the client's address) has MAX_ACTIVE_JOBS_PER_OWNER unfinished jobs."""
        await self._check_bundle_size(file_ids)
        job_id = self._store.new_job_id(idempotency_key, scope=owner)
        job = state.new_job(job_id, file_ids)
        job.trace_id = trace_id
        record = JobRecord(
            job=job,
            request_id=request_id,
            traceparent=traceparent,
            fingerprint=fingerprint(file_ids),
            owner=owner,
            quota=quota if self._max_active else None,
        )
        if record.quota and not await self._store.claim_slot(
            record.quota, job_id, self._max_active
        ):
            raise RateLimited(
                f"at most {self._max_active} unfinished jobs at once; "
                "wait for one to finish or cancel one",
                headers={"Retry-After": str(ACTIVE_CAP_RETRY_AFTER_S)},
            )
        try:
            stored = await self._store.create(record, idempotency_key, scope=owner)
        except BaseException:
            await self._release(record)
            raise
        if stored.job.job_id != job_id:
            await self._release(record)
            if stored.fingerprint != record.fingerprint or stored.owner != owner:
                raise Conflict("this Idempotency-Key was used with a different request body")
            return stored, False
        return stored, True

    async def _release(self, record: JobRecord) -> None:
        if record.quota:
            with contextlib.suppress(BackendUnavailable):
                await self._store.release_slot(record.quota, record.job.job_id)

    async def _check_bundle_size(self, file_ids: list[int]) -> None:
        cap = self._config.max_bundle_bytes
        if not cap:
            return
        try:
            async with asyncio.timeout(SIZE_CHECK_DEADLINE_S):
                sizes = await source_sizes(self._storage, file_ids, self._config.check_concurrency)
        except (StorageError, TimeoutError) as exc:
            # The store is unreachable or hung right now: accept the job rather than fail
            # or stall the request; the runner retries the store and checks the cap again
            # before bundling.
            why = str(exc) or f"no answer within {SIZE_CHECK_DEADLINE_S:g} s"
            log.warning("bundle size not checked at initiate: %s", why)
            return
        too_large = bundle_too_large(sum(size or 0 for size in sizes), cap)
        if too_large:
            raise PayloadTooLarge(f"{too_large} (MAX_BUNDLE_BYTES); ask for fewer files")

    async def get(self, job_id: str, principal: Principal | None = None) -> JobRecord:
        """The job's record; 404 when there is none, or when ``principal`` does not own it
        (the same answer, so ids of other owners' jobs cannot be probed)."""
        record = await self._store.get(job_id)
        if record is None or (principal is not None and record.owner != principal.owner):
            raise NotFound(f"no job {job_id}")
        return record

    async def authorize(self, job_id: str, principal: Principal | None) -> None:
        """404 unless ``principal`` may follow the job (a no-op when auth is off)."""
        if principal is not None:
            await self.get(job_id, principal)

    async def snapshot(self, job_id: str, principal: Principal | None = None) -> JobSnapshot:
        """The public job document, with a freshly signed link once completed."""
        return await self.view(await self.get(job_id, principal))

    async def view(self, record: JobRecord) -> JobSnapshot:
        job = record.job
        if job.status is JobStatus.COMPLETED and record.result_key:
            link = await self._storage.presign(record.result_key, self._config.url_ttl_s)
            job.download_url, job.expires_at = link.url, iso(link.expires_at)
        return job

    async def cancel(self, job_id: str, principal: Principal | None = None) -> JobSnapshot:
        """Cancel a job wherever it is: the cancelled state is written first, guarded (a
        job that ended meanwhile keeps its outcome: 409), then the worker, if any, stops
        without writing anything more and deletes its bundle."""
        for _ in range(CANCEL_TRIES):
            record = await self.get(job_id, principal)
            status = record.job.status
            if status is JobStatus.CANCELLED:
                return record.job
            if status.is_terminal:
                raise JobStateConflict(
                    f"job {job_id} is already {status.value}; it cannot be cancelled", status
                )
            state.transition(record.job, JobStatus.CANCELLED)
            try:
                await self._emitter(record).emit(
                    lambda j, s: CancelledFrame(job_id=j, seq=s), mode=WriteMode.ANY
                )
            except Superseded:
                continue  # it moved on meanwhile: read it again
            self.worker.observe(record)
            await self._stop_worker(job_id)
            # Attempts that died after their upload left bundles; a live one's completion is
            # refused by the cancel, and it deletes its own (again) once refused.
            with contextlib.suppress(TimeoutError):  # a hung store does not hold the answer
                async with asyncio.timeout(SIZE_CHECK_DEADLINE_S):
                    await delete_bundles(self._storage, job_id, range(1, record.fence + 1))
            return record.job
        raise JobStateConflict(f"job {job_id} kept changing; try again", record.job.status)

    async def _stop_worker(self, job_id: str) -> None:
        if await self.worker.stop_cancelled(job_id):
            return
        # Running on another replica (or nowhere): tell every replica. One that misses the
        # signal learns at the job's next write, which the cancelled state refuses.
        with contextlib.suppress(BackendUnavailable):
            await self._broker.signal(encode_signal(CancelSignal(job_id=job_id)))

    async def mark_lost(self, job_id: str, owner: str | None) -> None:
        """The store no longer has a job someone watches (a Redis that came back empty):
        end it as failed (job_lost) in a new epoch, unless a writer brought it back first."""
        record = JobRecord(job=state.new_job(job_id, []), owner=owner)
        state.mark_lost(record.job, LOST_ERROR)
        with contextlib.suppress(Superseded):
            await self._emitter(record).emit(
                lambda j, s: FailedFrame(job_id=j, seq=s, error=LOST_ERROR), mode=WriteMode.LOST
            )
            log.warning("job %s was lost by the store; ended as failed (job_lost)", job_id)

    # --- internals ---------------------------------------------------------------------

    def _emitter(self, record: JobRecord) -> FrameEmitter:
        return FrameEmitter(journal=self._journal, record=record, progress_interval=0)

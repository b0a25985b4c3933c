"""The job service: creates jobs, runs them on a bounded pool of slots, cancels them.

One dispatcher per replica takes job ids from the store's queue, and only while one of its
``concurrency`` slots is free: at most that many jobs run at once on this replica, the rest
wait as ``queued`` for whichever replica frees a slot first. One taker rather than one per
slot: an idle replica asks the queue once per poll, not ``concurrency`` times (a hundred
workers polling in step showed up as a latency spike on every socket once a second).
Each running job is a task of its own, kept in ``_running`` so cancel can reach it. Every
task is supervised: failures are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from server.backoff import full_jitter
from server.errors import (
    BackendUnavailable,
    Conflict,
    JobStateConflict,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StorageError,
)
from server.frames import CancelledFrame, JobSnapshot, JobStatus
from server.jobs import state
from server.jobs.emitter import FrameEmitter, Superseded
from server.jobs.runner import JobRunner, RunnerConfig, bundle_too_large, iso, source_sizes
from server.jobs.state import JobRecord
from server.journal.base import Journal
from server.observability.metrics import Metrics
from server.storage.base import Storage

if TYPE_CHECKING:
    from server.auth import Principal

log = logging.getLogger("delineate.jobs")


REMOTE_CANCEL_WAIT_S = 3.0
ACTIVE_CAP_RETRY_AFTER_S = 5
"""No one knows when a job will finish; this is how soon asking again makes sense."""


class CancelSignal(msgspec.Struct, tag="cancel"):
    job_id: str


encode_signal = msgspec.json.encode
decode_signal = msgspec.json.Decoder(CancelSignal).decode


def fingerprint(file_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, file_ids)).encode()).hexdigest()


class JobService:
    def __init__(
        self,
        *,
        storage: Storage,
        journal: Journal,
        config: RunnerConfig,
        concurrency: int,
        metrics: Metrics | None = None,
        max_active_per_owner: int = 0,
    ) -> None:
        self._storage, self._journal = storage, journal
        self._broker, self._store = journal.broker, journal.store
        self.metrics = metrics
        self._config = config
        self._concurrency = concurrency
        self._max_active = max_active_per_owner
        self._runner = JobRunner(
            storage=storage, journal=self._journal, config=config, stop_reason=self._reason
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._slots: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stop_reasons: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="job-dispatcher")
        self._dispatcher.add_done_callback(_log_failure)

    async def stop(self) -> None:
        """Stop taking work; hand running jobs back to the queue."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for job_id, task in list(self._running.items()):
            self._stop_reasons.setdefault(job_id, "shutdown")
            task.cancel()
        dispatcher = [self._dispatcher] if self._dispatcher is not None else []
        await asyncio.gather(*dispatcher, *self._slots, return_exceptions=True)
        # After the jobs handed back, which wrote through it.
        await self._journal.aclose()
        self._dispatcher = None

    @property
    def running(self) -> int:
        return len(self._running)

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
        job_id = str(uuid.uuid4())
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
            stored = await self._store.create(record, idempotency_key)
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
            sizes = await source_sizes(self._storage, file_ids, self._config.check_concurrency)
        except StorageError as exc:
            # The store is unreachable right now: accept the job rather than fail the request;
            # the runner retries the store and checks the cap again before bundling.
            log.warning("bundle size not checked at initiate: %s", exc)
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
        record = await self.get(job_id, principal)
        status = record.job.status
        if status is JobStatus.CANCELLED:
            return record.job
        if status.is_terminal:
            raise JobStateConflict(
                f"job {job_id} is already {status.value}; it cannot be cancelled", status
            )
        if status is JobStatus.QUEUED and await self._cancel_queued(record):
            return record.job
        task = self._running.get(job_id)
        if task is not None:
            self._stop_reasons[job_id] = "cancel"
            task.cancel()
            await asyncio.wait([task])
        else:
            # Running on another replica: tell every replica; the one running it stops it.
            await self._broker.signal(encode_signal(CancelSignal(job_id=job_id)))
            await self._wait_terminal(job_id)
        return (await self.get(job_id)).job

    def on_signal(self, payload: bytes) -> None:
        """Broker callback: a replica asked to cancel a job; stop it if it runs here."""
        try:
            signal = decode_signal(payload)
        except msgspec.ValidationError:
            log.warning("ignoring a malformed signal")
            return
        task = self._running.get(signal.job_id)
        if task is not None:
            self._stop_reasons[signal.job_id] = "cancel"
            task.cancel()

    async def _wait_terminal(self, job_id: str) -> None:
        """Wait for a remote cancel to land; if no replica runs the job (its replica died
        and the lease has not lapsed yet), cancel it in the store ourselves."""
        for _ in range(int(REMOTE_CANCEL_WAIT_S / 0.05)):
            record = await self.get(job_id)
            if record.job.status.is_terminal:
                return
            await asyncio.sleep(0.05)
        record = await self.get(job_id)
        if record.job.status is JobStatus.PROCESSING:
            state.transition(record.job, JobStatus.CANCELLED)
            emitter = self._emitter(record)
            with contextlib.suppress(Superseded):
                await emitter.emit(
                    lambda j, s: CancelledFrame(job_id=j, seq=s), expect=JobStatus.PROCESSING
                )

    # --- internals ---------------------------------------------------------------------

    def _emitter(self, record: JobRecord) -> FrameEmitter:
        return FrameEmitter(journal=self._journal, record=record, progress_interval=0)

    async def _cancel_queued(self, record: JobRecord) -> bool:
        """Cancel a job no worker has started; False if one started it meanwhile."""
        state.transition(record.job, JobStatus.CANCELLED)
        try:
            await self._emitter(record).emit(
                lambda j, s: CancelledFrame(job_id=j, seq=s), expect=JobStatus.QUEUED
            )
        except Superseded:
            return False
        self._observe(record)
        return True

    async def _dispatch(self) -> None:
        free = asyncio.Semaphore(self._concurrency)
        failures = 0
        while True:
            await free.acquire()
            try:
                job_id = await self._store.take()
            except BackendUnavailable:
                free.release()
                failures += 1
                await asyncio.sleep(full_jitter(failures, base=0.1, cap=5.0))
                continue
            except BaseException:
                free.release()
                raise
            failures = 0
            slot = asyncio.create_task(self._slot(job_id), name=f"job-slot-{job_id}")
            self._slots.add(slot)
            slot.add_done_callback(self._slots.discard)
            slot.add_done_callback(lambda _: free.release())
            slot.add_done_callback(_log_failure)

    async def _slot(self, job_id: str) -> None:
        """Run one taken job, then give its queue entry back (whatever the outcome)."""
        try:
            await self._run_one(job_id)
        except BackendUnavailable as exc:
            # The job's lease lapses and another worker (maybe this one) runs it again.
            log.warning("job %s interrupted: %s", job_id, exc)
        finally:
            with contextlib.suppress(BackendUnavailable):
                await self._store.ack(job_id)

    async def _run_one(self, job_id: str) -> None:
        record = await self._store.get(job_id)
        if record is None or record.job.status.is_terminal:
            return  # cancelled (or expired) while it waited, or finished before a crash
        task = asyncio.create_task(self._runner.run(record), name=f"job-{job_id}")
        task.add_done_callback(_log_failure)
        self._running[job_id] = task
        try:
            await asyncio.wait([task])
        finally:
            self._running.pop(job_id, None)
            self._stop_reasons.pop(job_id, None)
        self._observe(record)

    def _observe(self, record: JobRecord) -> None:
        job = record.job
        if self.metrics is None or not job.status.is_terminal:
            return
        self.metrics.jobs_finished.labels(job.status.value).inc()
        if job.started_at and job.finished_at:
            started = datetime.fromisoformat(job.started_at)
            finished = datetime.fromisoformat(job.finished_at)
            self.metrics.job_duration.observe((finished - started).total_seconds())

    def _reason(self, job_id: str) -> str | None:
        return self._stop_reasons.get(job_id)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())

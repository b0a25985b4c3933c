"""The worker: this replica's bounded pool of job slots, fed from the store's queue.

One dispatcher per replica takes job ids from the queue, and only while one of its
``concurrency`` slots is free: at most that many jobs run at once on this replica, the rest
wait as ``queued`` for whichever replica frees a slot first. One taker rather than one per
slot: an idle replica asks the queue once per poll, not ``concurrency`` times (many workers
polling in step show up as a latency spike on every socket). Each running job is a task of
its own, kept so a cancel can reach it. Every task is supervised: failures are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from delineate.backoff import full_jitter
from delineate.errors import BackendUnavailable
from delineate.jobs.runner import JobRunner, RunnerConfig
from delineate.journal.base import Journal
from delineate.observability.metrics import Metrics
from delineate.record import JobRecord
from delineate.storage.base import Storage

log = logging.getLogger("delineate.jobs")


class CancelSignal(msgspec.Struct, tag="cancel"):
    """Sent to every replica: stop this job if it runs here (its cancel is written)."""

    job_id: str


encode_signal = msgspec.json.encode
decode_signal = msgspec.json.Decoder(CancelSignal).decode


class Outcome(enum.Enum):
    """What becomes of a taken job's queue entry once its slot is done with it."""

    DONE = "done"  # acked
    INTERRUPTED = "interrupted"  # left to lapse: a worker runs the job again
    MISSING = "missing"  # the read or the claim found no job: dropped unless the store has it


class Worker:
    def __init__(
        self,
        *,
        storage: Storage,
        journal: Journal,
        config: RunnerConfig,
        concurrency: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._journal, self._store = journal, journal.store
        self._concurrency = concurrency
        self.metrics = metrics
        self._runner = JobRunner(
            storage=storage, journal=journal, config=config, stop_reason=self._reason
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._slots: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[bool]] = {}
        self._stop_reasons: dict[str, str] = {}
        self.on_job: Callable[[JobRecord], None] = _ignore
        """Told when a job starts here and when it ends (the operations dashboard)."""

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

    def dispatching(self) -> bool:
        """Whether this replica takes work: its dispatcher runs and the queue answers it (or
        every slot is busy, so it has no reason to ask)."""
        task = self._dispatcher
        if task is None or task.done():
            return False
        return self.running >= self._concurrency or self._store.consuming()

    async def stop_cancelled(self, job_id: str) -> bool:
        """Stop the job's task if it runs here (its cancel is written); whether it did."""
        task = self._running.get(job_id)
        if task is None:
            return False
        self._stop_reasons[job_id] = "cancel"
        task.cancel()
        await asyncio.wait([task])
        return True

    def on_signal(self, payload: bytes) -> None:
        """Broker callback: a replica cancelled a job; stop it if it runs here."""
        try:
            signal = decode_signal(payload)
        except msgspec.ValidationError:
            log.warning("ignoring a malformed signal")
            return
        task = self._running.get(signal.job_id)
        if task is not None:
            self._stop_reasons[signal.job_id] = "cancel"
            task.cancel()

    def observe(self, record: JobRecord) -> None:
        """Count a job that ended (here, or by a cancel written here)."""
        job = record.job
        self.on_job(record)
        if self.metrics is None or not job.status.is_terminal:
            return
        self.metrics.jobs_finished.labels(job.status.value).inc()
        if job.started_at and job.finished_at:
            started = datetime.fromisoformat(job.started_at)
            finished = datetime.fromisoformat(job.finished_at)
            self.metrics.job_duration.observe((finished - started).total_seconds())

    # --- internals ---------------------------------------------------------------------

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
        """Run one taken job, then give its queue entry back; but when Redis failed under
        the attempt, leave the entry to lapse, so a worker (maybe this one) runs the job
        again. Acking it would strand the job: on a Cluster the queue's shard may answer
        while the job's shard fails over, and a Redis back in time answers too."""
        outcome = Outcome.INTERRUPTED
        try:
            outcome = await self._run_one(job_id)
        except BackendUnavailable as exc:
            log.warning("job %s interrupted: %s", job_id, exc)
        finally:
            with contextlib.suppress(BackendUnavailable):
                if outcome is Outcome.INTERRUPTED:
                    self._store.abandon(job_id)
                elif outcome is Outcome.MISSING:
                    await self._store.drop_missing(job_id)
                else:
                    await self._store.ack(job_id)

    async def _run_one(self, job_id: str) -> Outcome:
        """Run the job. INTERRUPTED when the attempt was cut short: by Redis being
        unavailable, or by an error nobody expected (logged), which is a crashed attempt: its
        entry lapses and a worker runs the job again, instead of an ack that would leave it
        queued for good."""
        record = await self._store.get(job_id)
        if record is None:
            return Outcome.MISSING  # expired or lost; or the read was behind (drop_missing)
        if record.job.status.is_terminal:
            return Outcome.DONE  # cancelled while it waited, or finished before a crash
        if job_id in self._running:
            return Outcome.DONE  # a second queue entry for a job this replica runs (a hand-back's)
        task = asyncio.create_task(self._runner.run(record), name=f"job-{job_id}")
        task.add_done_callback(_log_failure)
        self._running[job_id] = task
        self.on_job(record)
        try:
            await asyncio.wait([task])
        finally:
            self._running.pop(job_id, None)
            self._stop_reasons.pop(job_id, None)
        self.observe(record)
        if task.cancelled():
            return Outcome.DONE
        if task.exception() is not None:
            return Outcome.INTERRUPTED
        return Outcome.DONE if task.result() else Outcome.MISSING

    def _reason(self, job_id: str) -> str | None:
        return self._stop_reasons.get(job_id)


def _ignore(record: JobRecord) -> None:
    pass


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())

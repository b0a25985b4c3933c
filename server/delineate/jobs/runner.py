"""Runs one job: check each file, pace the simulated work, stream ONE zip bundle, report.

The runner owns a job while its task runs, as one attempt: it takes the job's next fence
when it starts, and every write it makes carries that fence, so an attempt that lost its
lease (a paused replica) is refused as soon as it writes again and stops without touching
the output of the attempt that owns the job. It never raises for a job outcome: success and
failure end in a terminal frame; a cancel has been written by whoever cancelled; a shutdown
(``stop_reason`` says "shutdown") hands the job back to the queue for another worker. An
attempt's bundle is its own (``bundle_key(job, fence)``) and is deleted unless the stored
record names it as the job's result: a completion that lost to a cancel leaves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec

from delineate.backoff import full_jitter
from delineate.bundle import ZipBundle
from delineate.errors import BackendUnavailable, StorageError, TransientStorageError
from delineate.jobs import state
from delineate.jobs.emitter import FrameEmitter, Superseded, WriteMode, file_frame
from delineate.journal.base import Journal
from delineate.journal.fencing import Fenced, JobLost, StatusMoved
from delineate.observability import logs, sentry, tracing
from delineate.record import JobRecord, new_attempt
from delineate.storage.base import CHUNK_SIZE, ObjectWriter, Storage
from delineate.storage.keys import bundle_key, source_key
from delineate_protocol.codes import ErrorCode
from delineate_protocol.frames import (
    CompletedFrame,
    FailedFrame,
    FileProgress,
    JobError,
    JobStatus,
)

log = logging.getLogger("delineate.jobs")

StopReason = Callable[[str], str | None]
"""Why a job's task was cancelled: "cancel" (a user asked), "shutdown", or None."""


class RunnerConfig(msgspec.Struct, frozen=True, kw_only=True):
    delay_enabled: bool
    delay_min_ms: int
    delay_max_ms: int
    url_ttl_s: int
    progress_interval_s: float
    replica_id: str = ""
    max_attempts: int = 3
    retry_base_s: float = 1.0
    retry_cap_s: float = 30.0
    check_concurrency: int = 16
    max_bundle_bytes: int = 0
    """0: no cap."""


async def source_sizes(storage: Storage, file_ids: list[int], concurrency: int) -> list[int | None]:
    """Each source file's size (None: missing), asking the store ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def head(file_id: int) -> int | None:
        async with limit:
            info = await storage.head(source_key(file_id))
        return None if info is None else info.size

    return await asyncio.gather(*(head(f) for f in file_ids))


def bundle_too_large(total: int, cap: int) -> str | None:
    """Why a bundle of ``total`` bytes is refused, or None when it fits."""
    if cap and total > cap:
        return f"the files add up to {total} bytes; a bundle may hold at most {cap} bytes"
    return None


class JobFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(code=code, message=message)


MIN_CHUNK = 4 * 1024


def paced_chunk_size(total_bytes: int, delay_s: float, interval_s: float) -> int:
    """Read small enough chunks that a paced job makes progress every interval (a 1 MB file
    spread over 20 s in 64 KiB chunks would move once a second whatever PROGRESS_INTERVAL_MS
    says), but never below 4 KiB nor above the store's 64 KiB."""
    if delay_s <= 0 or interval_s <= 0:
        return CHUNK_SIZE
    steps = max(1, int(delay_s / interval_s))
    # Rounded up: never more chunks than intervals, so chunks come no faster than progress.
    return max(MIN_CHUNK, min(CHUNK_SIZE, -(-total_bytes // steps)))


class Pacer:
    """Spreads a job's simulated processing time over its bytes, so progress is smooth."""

    def __init__(self, total_s: float, total_bytes: int, clock: Callable[[], float]) -> None:
        self._total_s, self._total_bytes, self._clock = total_s, max(total_bytes, 1), clock
        self._start = clock()
        self._done = 0

    def delay_after(self, n: int) -> float:
        """Seconds to wait after ``n`` more bytes to stay on schedule."""
        self._done += n
        due = self._start + self._total_s * self._done / self._total_bytes
        return max(0.0, due - self._clock())


class JobRunner:
    def __init__(
        self,
        *,
        storage: Storage,
        journal: Journal,
        config: RunnerConfig,
        stop_reason: StopReason,
        rng: random.Random | None = None,
    ) -> None:
        self._storage, self._journal, self._store = storage, journal, journal.store
        self._config = config
        self._stop_reason = stop_reason
        self._rng = rng or random.Random()

    async def run(self, record: JobRecord) -> bool:
        """Run a queued job, or take over one whose replica was lost mid-run. False when the
        claim found no job at all: the store lost it, or answered from a node behind the
        primary; the worker then lets the store decide about the queue entry."""
        job = record.job
        token = logs.job_id_var.set(job.job_id)
        attributes: dict[str, str | int] = {
            "job.id": job.job_id,
            "job.files": len(job.files),
            "replica": self._config.replica_id,
        }
        try:
            with tracing.tracer().start_as_current_span(
                "job.run", context=tracing.context_of(record.traceparent), attributes=attributes
            ) as span:
                log.info("job started (attempt %d)", job.attempt + 1)
                try:
                    ran = await self._run(record)
                except JobLost:
                    span.set_attribute("job.status", "lost")
                    return False
                if not ran:
                    span.set_attribute("job.status", "not_run")
                    return True
                log.info("job %s", job.status.value)
                span.set_attribute("job.status", job.status.value)
                span.set_attribute("job.attempt", job.attempt)
                return True
        finally:
            logs.job_id_var.reset(token)

    async def _run(self, record: JobRecord) -> bool:
        """Run the attempt; False when the claim found the job changed (nothing ran)."""
        emitter = FrameEmitter(
            journal=self._journal,
            record=record,
            progress_interval=self._config.progress_interval_s,
        )
        job = record.job
        stored = job.status
        if stored is JobStatus.PROCESSING:
            # Taken over: the bundle restarts from the first file (the safe point).
            state.transition(job, JobStatus.QUEUED)
        state.reset_progress(job)
        state.transition(job, JobStatus.PROCESSING)
        job.worker = self._config.replica_id
        record.fence += 1
        record.attempt = new_attempt()
        try:
            await emitter.status(mode=WriteMode.CLAIM, expect=stored)
        except Superseded as exc:
            # A lost reply's retry meets its own landed claim: as the fence taken (a takeover)
            # or, for a queued job, as the status moved to processing.
            own = isinstance(exc, Fenced | StatusMoved) and await self._claimed_already(record)
            if not own:
                log.info("job %s changed before it started (%s); not running it", job.job_id, exc)
                if isinstance(exc, JobLost):
                    raise
                return False
        output = _Output()
        try:
            await self._outcome(emitter, output)
        except asyncio.CancelledError:
            await self._stopped(emitter, output)
            raise
        except Superseded as exc:
            await self._superseded(emitter, exc)
            # The completed frame itself may be the write refused (a cancel won): the job
            # says completed here, not in the store. _discard asks the store; shielded,
            # since the winning cancel's signal cancels this task at any moment.
            await asyncio.shield(self._discard(record, output.key))
            return True
        if job.status is not JobStatus.COMPLETED:
            await asyncio.shield(self._discard(record, output.key))
        # The job ended by this attempt's hand: earlier attempts that died after their upload
        # (kill -9) left bundles nobody else will delete.
        await delete_bundles(self._storage, job.job_id, range(1, record.fence))
        return True

    async def _claimed_already(self, record: JobRecord) -> bool:
        """A claim whose reply was lost (Redis went away mid-call) and that landed: the retry
        finds the fence taken, by this very attempt. Carry on from what it stored."""
        stored = await self._store.get(record.job.job_id)
        mine = (
            stored is not None
            and stored.fence == record.fence
            and stored.attempt == record.attempt
            and stored.job.status is JobStatus.PROCESSING
            and stored.job.worker == record.job.worker
        )
        if mine and stored is not None:
            record.job.seq, record.job.epoch = stored.job.seq, stored.job.epoch
        return mine

    async def _outcome(self, emitter: FrameEmitter, output: _Output) -> None:
        """Run the attempt to its terminal frame (``Superseded`` when the job moved on)."""
        job = emitter.record.job
        try:
            await self._attempts(emitter, output)
        except JobFailure as exc:
            await self._fail(emitter, exc.error)
        except StorageError as exc:
            await self._fail(emitter, JobError(code=exc.code, message=exc.message))
        except (asyncio.CancelledError, Superseded, BackendUnavailable):
            raise
        except Exception as exc:
            log.exception("job crashed")
            sentry.capture_job_error(
                exc,
                {"job_id": job.job_id, "request_id": emitter.record.request_id,
                 "trace_id": job.trace_id},
            )  # fmt: skip
            await self._fail(
                emitter, JobError(code=ErrorCode.INTERNAL_ERROR, message="the job crashed")
            )

    async def _attempts(self, emitter: FrameEmitter, output: _Output) -> None:
        """Retry transient storage failures with exponential backoff and jitter."""
        job = emitter.record.job
        for attempt in range(1, self._config.max_attempts + 1):
            try:
                await self._work(emitter, output)
                return
            except TransientStorageError as exc:
                if attempt == self._config.max_attempts:
                    message = f"storage failed {attempt} times; last error: {exc.message}"
                    raise JobFailure(exc.code, message) from exc
                delay = full_jitter(
                    attempt - 1, base=self._config.retry_base_s, cap=self._config.retry_cap_s
                )
                log.warning(
                    "job %s: transient storage error (%s); retry in %.1fs", job.job_id, exc, delay
                )
                await asyncio.sleep(delay)
                state.reset_progress(job)
                job.attempt += 1
                await emitter.status()

    async def _work(self, emitter: FrameEmitter, output: _Output) -> None:
        record = emitter.record
        available = await self._check_files(emitter)
        if not available:
            raise JobFailure(
                ErrorCode.NO_FILES_AVAILABLE, "none of the requested files is available"
            )
        key = bundle_key(record.job.job_id, record.fence)
        writer = await self._storage.writer(key)
        output.key = key  # from here on this attempt may have written it: cleanup covers it
        try:
            size = await self._write_bundle(emitter, available, writer)
        except BaseException:
            await writer.abort()
            raise
        record.result_key = key
        await self._complete(emitter, key, size, last_file=available[-1])

    async def _check_files(self, emitter: FrameEmitter) -> list[FileProgress]:
        job = emitter.record.job
        with tracing.tracer().start_as_current_span("job.check_files"):
            sizes = await source_sizes(
                self._storage, [f.file_id for f in job.files], self._config.check_concurrency
            )
        available = []
        for f, size in zip(job.files, sizes, strict=True):
            if size is None:
                state.mark_unavailable(f)
                await emitter.file(f)
            else:
                state.mark_available(job, f, size)
                available.append(f)
        # Checked at initiate too; the files may have grown since.
        too_large = bundle_too_large(job.bytes_total, self._config.max_bundle_bytes)
        if too_large:
            raise JobFailure(ErrorCode.BUNDLE_TOO_LARGE, too_large)
        await emitter.progress()
        return available

    async def _write_bundle(
        self, emitter: FrameEmitter, files: list[FileProgress], writer: ObjectWriter
    ) -> int:
        job = emitter.record.job
        delay_s = self._delay_s()
        pacer = Pacer(delay_s, job.bytes_total, time.monotonic)
        chunk_size = paced_chunk_size(job.bytes_total, delay_s, self._config.progress_interval_s)
        bundle = ZipBundle()
        with bundle:
            for f in files:
                span = tracing.tracer().start_as_current_span(
                    "job.file", attributes={"file.id": f.file_id, "file.size": f.size or 0}
                )
                with span, bundle.entry(f"{f.file_id}.zip", f.size or 0) as entry:
                    async for chunk in self._storage.read(source_key(f.file_id), chunk_size):
                        entry.write(chunk)
                        await writer.write(bundle.drain())
                        state.add_bytes(job, f, len(chunk))
                        await emitter.progress()
                        await asyncio.sleep(pacer.delay_after(len(chunk)))
                await writer.write(bundle.drain())
                state.mark_done(job, f)
                if f is not files[-1]:  # the last one's frame goes with the terminal frame
                    await emitter.file(f)
            await writer.write(bundle.close())
        await emitter.flush_progress()
        with tracing.tracer().start_as_current_span("storage.complete"):
            return await settled(writer.complete())

    async def _complete(
        self, emitter: FrameEmitter, key: str, size: int, *, last_file: FileProgress
    ) -> None:
        """The last file's frame and the completed frame, published together: a replica
        writes them to each socket at once. At a job's end every follower gets both; as
        two messages they were two deliveries, two writes per socket and two wake-ups per
        client, within a few milliseconds (the bundle's completion between them)."""
        job = emitter.record.job
        link = await self._storage.presign(key, self._config.url_ttl_s)
        state.transition(job, JobStatus.COMPLETED)
        job.size = size
        included = [f.file_id for f in job.files if f.available]
        missing = [f.file_id for f in job.files if not f.available]
        await emitter.emit_many(
            [
                file_frame(last_file),
                lambda j, s: CompletedFrame(
                    job_id=j,
                    seq=s,
                    download_url=link.url,
                    expires_at=iso(link.expires_at),
                    size=size,
                    files_included=len(included),
                    files_unavailable=missing,
                ),
            ]
        )

    async def _fail(self, emitter: FrameEmitter, error: JobError) -> None:
        state.transition(emitter.record.job, JobStatus.FAILED, error)
        await emitter.emit(lambda j, s: FailedFrame(job_id=j, seq=s, error=error))

    async def _stopped(self, emitter: FrameEmitter, output: _Output) -> None:
        """The task was cancelled. A cancel was written by whoever cancelled (and won);
        a shutdown hands the job back so another worker (or this one, restarted) runs it."""
        record = emitter.record
        job = record.job
        if self._stop_reason(job.job_id) != "cancel":
            state.hand_back(job)
            try:
                await emitter.status()
                await self._store.enqueue(job.job_id)
            except Superseded as exc:
                log.info("job %s not handed back: %s", job.job_id, exc)
        await self._discard(record, output.key)

    async def _superseded(self, emitter: FrameEmitter, exc: Superseded) -> None:
        """A write was refused: the job ended elsewhere (a cancel), another attempt owns it,
        or the store lost it. Stop; a lost job ends for its watchers as failed (job_lost)."""
        job = emitter.record.job
        log.warning("job %s: attempt %d stops: %s", job.job_id, emitter.record.fence, exc)
        if isinstance(exc, JobLost):
            await self._lost(emitter)

    async def _lost(self, emitter: FrameEmitter) -> None:
        record = emitter.record
        record.result_key = None
        state.mark_lost(record.job, LOST_ERROR)
        with contextlib.suppress(Superseded):  # someone else wrote it back first
            await emitter.emit(
                lambda j, s: FailedFrame(job_id=j, seq=s, error=LOST_ERROR), mode=WriteMode.LOST
            )

    async def _discard(self, record: JobRecord, key: str | None) -> None:
        """Delete this attempt's bundle unless the stored record names it the job's result."""
        if key is None:
            return
        try:
            stored = await self._store.get(record.job.job_id)
        except BackendUnavailable:
            log.warning("bundle %s kept: the job's outcome cannot be read", key)
            return
        if stored is not None and stored.result_key == key:
            return  # the job's result: its stored status is completed
        await delete_patiently(self._storage, key)

    def _delay_s(self) -> float:
        if not self._config.delay_enabled:
            return 0.0
        low, high = self._config.delay_min_ms, self._config.delay_max_ms
        return self._rng.uniform(low, high) / 1000.0


LOST_ERROR = JobError(
    code=ErrorCode.JOB_LOST,
    message="the server lost this job's state (its Redis restarted without persistence); "
    "start it again",
)


class _Output:
    """The bundle this attempt completed, if any."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key: str | None = None


async def settled(call: Coroutine[Any, Any, int]) -> int:
    """Await a storage call that runs on in a thread whatever happens here: when this task
    is cancelled, wait for the call to end before going on, so a cleanup that follows (the
    bundle's deletion) cannot run before an upload that then lands."""
    future = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


DELETE_TRIES = 6
"""A bundle's deletion is tried this often, with backoff (about 5 s in all): the store's
outage that failed the job is often what fails its cleanup first."""


async def delete_patiently(storage: Storage, key: str) -> bool:
    """Delete ``key`` (present or not), retrying while the store is unreachable; whether it
    was deleted (a store away for longer leaves the object, logged)."""
    for attempt in range(DELETE_TRIES):
        try:
            await storage.delete(key)
            return True
        except StorageError as exc:
            if attempt == DELETE_TRIES - 1:
                log.warning("bundle %s kept: %s", key, exc)
                return False
            await asyncio.sleep(full_jitter(attempt, base=0.25, cap=2.0))
    return False


async def delete_bundles(storage: Storage, job_id: str, attempts: range) -> None:
    """Delete these attempts' bundles, whether they exist or not."""
    for attempt in attempts:
        if not await delete_patiently(storage, bundle_key(job_id, attempt)):
            return


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

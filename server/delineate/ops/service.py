"""One replica's part of the operations dashboard.

It keeps what the replica saw (job outcomes, logged errors, spans of job traces) in bounded
local buffers, writes them to the shared ``OpsStore`` every ``FLUSH_S``, and sends a
heartbeat every OPS_HEARTBEAT_S: health checks, draining, sockets, running jobs and its
work since the last heartbeat (``ops.stats``). Reading the dashboard reads the store, so
any replica shows every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan

from delineate.errors import BackendUnavailable
from delineate.observability import sentry, tracing
from delineate.ops import records, spans, stats
from delineate.ops.errorlog import OWN_LOGGER, ErrorLog
from delineate.ops.records import (
    BrowserConfig,
    ErrorEntry,
    Heartbeat,
    JobEntry,
    Links,
    Overview,
    ReplicaView,
    SpanRecord,
    Trace,
)
from delineate.ops.store import OpsStore
from delineate.record import JobRecord
from delineate.settings import Settings

if TYPE_CHECKING:
    from delineate.services import Services

log = logging.getLogger(OWN_LOGGER)

FLUSH_S = 0.5
HEALTH_TIMEOUT_S = 2.0
LATE_AFTER_BEATS = 3
"""A replica whose heartbeat is this many intervals old shows as late, then lost."""
LOST_AFTER_BEATS = 10
FORGET_AFTER_S = 600
SENTRY_IDS_KEPT = 256
RUNNING_SHOWN = 100
"""Running jobs a heartbeat lists (JOB_CONCURRENCY may be up to 1000)."""
CALLERS_FAULTS = frozenset({"no_files_available", "bundle_too_large"})
"""Job failures that are the caller's doing, not the service's: not in the error log."""


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    began = datetime.fromisoformat(start)
    ended = datetime.fromisoformat(end) if end else datetime.now(began.tzinfo)
    return round((ended - began).total_seconds(), 3)


def job_entry(record: JobRecord) -> JobEntry:
    job = record.job
    return JobEntry(
        job_id=job.job_id,
        status=job.status.value,
        owner=record.owner,
        replica=job.worker,
        files=len(job.files),
        progress=job.progress,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        duration_s=_seconds_between(job.started_at, job.finished_at),
        trace_id=job.trace_id,
        request_id=record.request_id,
        error_code=job.error.code if job.error else None,
        error_message=job.error.message if job.error else None,
    )


def state_of(age_s: float, interval_s: float) -> str:
    if age_s < LATE_AFTER_BEATS * interval_s:
        return "up"
    return "late" if age_s < LOST_AFTER_BEATS * interval_s else "lost"


class Ops:
    def __init__(self, settings: Settings, store: OpsStore) -> None:
        self.store, self.replica = store, settings.replica_id
        self.heartbeat_s = settings.ops_heartbeat_s
        self.links = Links(trace=settings.trace_ui_url, sentry=settings.sentry_ui_url)
        self.keep_spans = settings.ops_spans > 0
        self.browser = BrowserConfig(
            sentry_dsn=settings.browser_sentry_dsn,
            traces=self.keep_spans or settings.otel_exporter_otlp_endpoint is not None,
            replica=settings.replica_id,
        )
        self.running: dict[str, JobRecord] = {}
        self._jobs: deque[JobEntry] = deque(maxlen=settings.ops_buffer)
        self._errors: deque[ErrorEntry] = deque(maxlen=settings.ops_buffer)
        # Jobs whose crash was logged here lately: their failure needs no entry of its own.
        # Not the unflushed buffer: a flush between the crash and the failure would empty it.
        self._jobs_logged: deque[str] = deque(maxlen=settings.ops_buffer)
        self._spans: deque[SpanRecord] = deque(maxlen=max(settings.ops_spans, 1))
        self._sentry_ids: OrderedDict[str, str] = OrderedDict()
        self._counters: stats.Counters | None = None
        self._read_at = self.started_at = time.time()
        self._services: Services | None = None
        self._task: asyncio.Task[None] | None = None
        self._undo: list[Callable[[], Any]] = []

    # --- what the replica reports (synchronous: called from hooks on hot paths) ---------------

    def on_job(self, record: JobRecord) -> None:
        """JobService hook: a job starts here, ends, or goes back to the queue."""
        job = record.job
        if job.status.is_terminal:
            self.running.pop(job.job_id, None)
            self._jobs.append(job_entry(record))
            if job.error is not None and job.error.code not in CALLERS_FAULTS:
                self._job_failed(record)
        elif self.running.pop(job.job_id, None) is None:
            self.running[job.job_id] = record

    def _job_failed(self, record: JobRecord) -> None:
        job = record.job
        assert job.error is not None
        if job.job_id in self._jobs_logged:
            return  # its crash was logged already, with the exception
        self.on_error(
            ErrorEntry(
                id=f"job-{job.job_id}",
                ts=time.time(),
                replica=self.replica,
                kind="job",
                logger="delineate.jobs",
                message=f"job failed: {job.error.code}: {job.error.message}",
                request_id=record.request_id,
                job_id=job.job_id,
                trace_id=job.trace_id,
            )
        )

    def on_error(self, entry: ErrorEntry) -> None:
        running = self.running.get(entry.job_id or "")
        if running is not None:  # a job's log line knows its job, not the request behind it
            entry.request_id = entry.request_id or running.request_id
            entry.trace_id = entry.trace_id or running.job.trace_id
        if entry.job_id is not None:
            self._jobs_logged.append(entry.job_id)
        self._errors.append(entry)

    def on_span(self, span: ReadableSpan) -> None:
        if spans.kept(span):
            self._spans.append(spans.record_of(span))

    def on_sentry_event(self, event: dict[str, Any]) -> None:
        """Sentry's before_send: remember the event id for the error of the same trace."""
        tags, event_id = event.get("tags") or {}, event.get("event_id")
        trace_id = tags.get("trace_id") if isinstance(tags, dict) else None
        if trace_id and event_id:
            self._sentry_ids[str(trace_id)] = str(event_id)
            while len(self._sentry_ids) > SENTRY_IDS_KEPT:
                self._sentry_ids.popitem(last=False)

    def add_browser_spans(self, found: list[SpanRecord]) -> None:
        """Spans a page sent: kept for the waterfall, exported with the replica's own."""
        if self.keep_spans:
            self._spans.extend(found)
        tracing.export([spans.readable(s) for s in found])

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, services: Services) -> None:
        self._services = services
        handler = ErrorLog(self.replica, self.on_error)
        logging.getLogger().addHandler(handler)
        self._undo.append(lambda: logging.getLogger().removeHandler(handler))
        if self.keep_spans:
            self._undo.append(tracing.listen(self.on_span))
        self._undo.append(sentry.on_event(self.on_sentry_event))
        self._task = asyncio.create_task(self._run(), name="ops")
        self._task.add_done_callback(_log_failure)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        with contextlib.suppress(BackendUnavailable, OSError):
            await self.flush()
            await self.store.forget(self.replica)  # stopped, not lost

    async def _run(self) -> None:
        next_beat, failing = 0.0, False
        while True:
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                    await self.beat()
                await self.flush()
            except Exception as exc:  # the heartbeat must outlive a Redis outage or a bad read
                if not failing:  # once per outage, not twice a second
                    log.warning("dashboard state not shared: %s", exc)
                failing = True
            else:
                if failing:
                    log.info("dashboard state shared again")
                failing = False
            await asyncio.sleep(FLUSH_S)

    async def flush(self) -> None:
        jobs, errors, kept = list(self._jobs), list(self._errors), list(self._spans)
        if not (jobs or errors or kept):
            return
        self._jobs.clear()
        self._errors.clear()
        self._spans.clear()
        for entry in errors:
            if entry.trace_id and not entry.sentry_event_id:
                entry.sentry_event_id = self._sentry_ids.get(entry.trace_id)
        by_trace: dict[str, list[bytes]] = {}
        for span in kept:
            by_trace.setdefault(span.trace_id, []).append(records.encode(span))
        try:
            await self.store.push(
                [records.encode(j) for j in jobs], [records.encode(e) for e in errors]
            )
            await self.store.add_spans(by_trace)
        except BaseException:
            # Kept for the next try (the buffers' bounds drop the oldest if it never comes).
            self._jobs.extendleft(reversed(jobs))
            self._errors.extendleft(reversed(errors))
            self._spans.extendleft(reversed(kept))
            raise

    # --- the heartbeat --------------------------------------------------------------------

    async def beat(self) -> None:
        services = self._services
        assert services is not None
        counters, now = stats.Counters.read(services.metrics.registry), time.time()
        perf = None
        if self._counters is not None:
            lag = services.loop_lag.reset_beat()
            perf = stats.interval(self._counters, counters, now - self._read_at, lag)
        self._counters, self._read_at = counters, now
        beat = Heartbeat(
            replica=self.replica,
            ts=now,
            started_at=self.started_at,
            interval_s=self.heartbeat_s,
            draining=services.draining.is_set(),
            checks=await _checks(services.health_checks()),
            sockets=counters.sockets,
            jobs_running=services.jobs.running,
            concurrency=services.settings.job_concurrency,
            closes_queued=len(services.closes),
            broker_reconnects=int(getattr(services.broker, "reconnects", 0)),
            running=[job_entry(r) for r in list(self.running.values())[:RUNNING_SHOWN]],
            perf=perf,
        )
        await self.store.beat(self.replica, records.encode(beat))

    # --- reading --------------------------------------------------------------------------

    async def overview(self) -> Overview:
        raw_beats, (raw_jobs, raw_errors) = await asyncio.gather(
            self.store.beats(), self.store.recent()
        )
        now = time.time()
        replicas = []
        for raw in raw_beats:
            beat = records.decode_beat(raw)
            age = max(0.0, now - beat.ts)
            if age > FORGET_AFTER_S:
                await self.store.forget(beat.replica)
                continue
            replicas.append(ReplicaView(state=state_of(age, beat.interval_s), age_s=age, beat=beat))
        replicas.sort(key=lambda r: r.beat.replica)
        return Overview(
            replica=self.replica,
            now=now,
            replicas=replicas,
            jobs=_jobs(replicas, [records.decode_job(r) for r in raw_jobs]),
            errors=[records.decode_error(r) for r in raw_errors],
            links=self.links,
        )

    async def trace(self, trace_id: str) -> Trace:
        found = [records.decode_span(r) for r in await self.store.spans(trace_id)]
        found += [s for s in self._spans if s.trace_id == trace_id]  # not flushed yet
        unique = {s.span_id: s for s in found}
        return Trace(trace_id=trace_id, spans=sorted(unique.values(), key=lambda s: s.start_ms))


def _jobs(replicas: list[ReplicaView], finished: list[JobEntry]) -> list[JobEntry]:
    """Running jobs (from the live replicas' heartbeats), newest first, then finished ones."""
    running = [j for r in replicas if r.state != "lost" for j in r.beat.running]
    running.sort(key=lambda j: j.started_at or "", reverse=True)
    done = {j.job_id for j in finished}
    return [j for j in running if j.job_id not in done] + finished


async def _checks(checks: dict[str, Awaitable[bool]]) -> dict[str, str]:
    async def one(check: Awaitable[bool]) -> str:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                return "ok" if await check else "error"
        except Exception:
            return "error"

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("the dashboard's task failed", exc_info=task.exception())

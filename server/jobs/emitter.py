"""Publishes one job's frames: seq from the broker, record saved first, then fan-out.

Saving the record before publishing is what makes resume exact: a snapshot read at seq S
reflects every frame up to S, so a watcher needs only the frames after S.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from server.backoff import full_jitter
from server.broker.base import Broker
from server.errors import BackendUnavailable
from server.frames import (
    TERMINAL_FRAME_TYPES,
    AnyFrame,
    FileFrame,
    FileProgress,
    JobStatus,
    ProgressFrame,
    StatusFrame,
    encoder,
)
from server.jobs.state import JobRecord
from server.jobstore.base import JobStore

BACKEND_WAIT_S = 60.0


class Superseded(Exception):
    """The stored job moved on (cancelled, or taken by another worker) before this write."""


class Throttle:
    """At most one event per ``interval`` seconds; remembers that one was held back."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = float("-inf")
        self.pending = False

    def ready(self) -> bool:
        now = self._clock()
        if now - self._last >= self.interval:
            self._last, self.pending = now, False
            return True
        self.pending = True
        return False


class FrameEmitter:
    def __init__(
        self, *, broker: Broker, store: JobStore, record: JobRecord, progress_interval: float
    ) -> None:
        self._broker, self._store, self.record = broker, store, record
        self._throttle = Throttle(progress_interval)

    async def emit(
        self, build: Callable[[str, int], AnyFrame], *, expect: JobStatus | None = None
    ) -> AnyFrame:
        """Publish one frame. With ``expect``, only if the stored status still is that
        (else ``Superseded``: someone else moved the job first).

        While the shared backend is unreachable the job waits here, retrying with backoff,
        for up to ``BACKEND_WAIT_S``: a Redis restart pauses jobs instead of failing them."""
        deadline = time.monotonic() + BACKEND_WAIT_S
        for attempt in itertools.count():
            try:
                return await self._emit_once(build, expect)
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(full_jitter(attempt, base=0.05, cap=2.0))
        raise AssertionError("unreachable")

    async def _emit_once(
        self, build: Callable[[str, int], AnyFrame], expect: JobStatus | None
    ) -> AnyFrame:
        job = self.record.job
        seq = await self._broker.next_seq(job.job_id)
        job.seq = seq
        frame = build(job.job_id, seq)
        frame.trace_id = job.trace_id
        if not await self._store.save(self.record, expect=expect):
            raise Superseded(f"job {job.job_id} is no longer {expect}")
        terminal = frame.__struct_config__.tag in TERMINAL_FRAME_TYPES
        await self._broker.publish(job.job_id, seq, encoder.encode(frame), terminal=terminal)
        return frame

    async def status(self, *, expect: JobStatus | None = None) -> None:
        job = self.record.job
        await self.emit(
            lambda j, s: StatusFrame(job_id=j, seq=s, status=job.status, attempt=job.attempt),
            expect=expect,
        )

    async def file(self, f: FileProgress) -> None:
        await self.emit(lambda j, s: FileFrame(job_id=j, seq=s, file=f))

    async def progress(self) -> None:
        """A progress frame, unless one went out less than the interval ago."""
        if self._throttle.ready():
            await self.emit(self._progress_frame)

    async def flush_progress(self) -> None:
        """Send the progress that the throttle held back, if any."""
        if self._throttle.pending:
            self._throttle.pending = False
            await self.emit(self._progress_frame)

    def _progress_frame(self, job_id: str, seq: int) -> ProgressFrame:
        job = self.record.job
        return ProgressFrame(
            job_id=job_id,
            seq=seq,
            progress=job.progress,
            bytes_done=job.bytes_done,
            bytes_total=job.bytes_total,
            files_done=job.files_done,
            files_total=job.total_file_ids,
        )

"""Publishes one job's frames through the journal, with what a job needs around it:
retries while the shared backend is down, and progress frames at most one per interval."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

from delineate.backoff import full_jitter
from delineate.errors import BackendUnavailable
from delineate.journal.base import BuildFrame, Journal, Superseded, WriteMode
from delineate.record import JobRecord
from delineate_protocol.frames import (
    AnyFrame,
    FileFrame,
    FileProgress,
    JobSnapshot,
    JobStatus,
    ProgressFrame,
    StatusFrame,
)

__all__ = ["FrameEmitter", "Superseded", "Throttle", "WriteMode", "file_frame", "progress_frame"]

BACKEND_WAIT_S = 60.0


class Throttle:
    """About one event per ``interval``: events pass on a grid of interval steps, with a
    tenth of an interval of slack, rather than "an interval since the last one passed".

    The runner reads a chunk per interval and asks for a progress frame after each. Measured
    from the last frame, a chunk that came a millisecond early (jitter, or chunks a little
    shorter than the interval) was held back and the next one passed: jobs sent 1.4
    progress frames a second where 2 were configured. On a grid the jitter does not add up.
    After a pause of half an interval or more, the grid starts again from the event that
    ends it (no catch-up burst); two events are never closer than 0.4 intervals."""

    SLACK = 0.1

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._due = float("-inf")
        self.pending = False

    def ready(self) -> bool:
        now = self._clock()
        if now < self._due - self.interval * self.SLACK:
            self.pending = True
            return False
        late = now - self._due
        self._due = self._due + self.interval if late < self.interval / 2 else now + self.interval
        self.pending = False
        return True


class FrameEmitter:
    def __init__(self, *, journal: Journal, record: JobRecord, progress_interval: float) -> None:
        self._journal, self.record = journal, record
        self._throttle = Throttle(progress_interval)

    async def emit(
        self,
        build: BuildFrame,
        *,
        mode: WriteMode = WriteMode.WORKER,
        expect: JobStatus | None = None,
    ) -> AnyFrame:
        """Publish one frame, guarded (``delineate.journal.fencing``): ``Superseded`` when the
        job moved on (it ended, another attempt owns it, ``expect`` no longer holds)."""
        return (await self.emit_many([build], mode=mode, expect=expect))[0]

    async def emit_many(
        self,
        builds: list[BuildFrame],
        *,
        mode: WriteMode = WriteMode.WORKER,
        expect: JobStatus | None = None,
    ) -> list[AnyFrame]:
        """Publish frames made at one moment together (``Journal.append_many``).

        While the shared backend is unreachable the job waits here, retrying with backoff,
        for up to ``BACKEND_WAIT_S``: a Redis restart pauses jobs instead of failing them."""
        deadline = time.monotonic() + BACKEND_WAIT_S
        for attempt in itertools.count():
            try:
                return await self._journal.append_many(
                    self.record, builds, mode=mode, expect=expect
                )
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(full_jitter(attempt, base=0.05, cap=2.0))
        raise AssertionError("unreachable")

    async def status(
        self, *, mode: WriteMode = WriteMode.WORKER, expect: JobStatus | None = None
    ) -> None:
        job = self.record.job
        await self.emit(
            lambda j, s: StatusFrame(job_id=j, seq=s, status=job.status, attempt=job.attempt),
            mode=mode,
            expect=expect,
        )

    async def file(self, f: FileProgress) -> None:
        await self.emit(file_frame(f))

    async def progress(self) -> None:
        """A progress frame, unless one went out less than the interval ago."""
        if self._throttle.ready():
            await self.emit(progress_frame(self.record.job))

    async def flush_progress(self) -> None:
        """Send the progress that the throttle held back, if any."""
        if self._throttle.pending:
            self._throttle.pending = False
            await self.emit(progress_frame(self.record.job))


def file_frame(f: FileProgress) -> BuildFrame:
    return lambda job_id, seq: FileFrame(job_id=job_id, seq=seq, file=f)


def progress_frame(job: JobSnapshot) -> BuildFrame:
    """The builder of a progress frame carrying ``job``'s numbers as they are when built."""
    return lambda job_id, seq: ProgressFrame(
        job_id=job_id,
        seq=seq,
        progress=job.progress,
        bytes_done=job.bytes_done,
        bytes_total=job.bytes_total,
        files_done=job.files_done,
        files_total=job.total_file_ids,
    )

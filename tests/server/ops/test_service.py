"""A replica's job bookkeeping for the dashboard: running, finished, handed back, failed."""

from __future__ import annotations

import logging

from delineate.jobs import state
from delineate.ops.errorlog import ErrorLog
from delineate.ops.service import Ops
from delineate.ops.store import MemoryOpsStore
from delineate.record import JobRecord
from delineate.settings import Settings
from delineate_protocol.frames import JobError, JobStatus


def record(job_id: str) -> JobRecord:
    return JobRecord(job=state.new_job(job_id, [70000]), request_id=f"req-{job_id}", owner="ann")


def ops() -> Ops:
    return Ops(Settings(replica_id="r1"), MemoryOpsStore(keep=10, traces=10))


async def test_a_job_is_running_until_it_ends_then_recent() -> None:
    """Started: listed as running; completed: off that list, onto the recent jobs."""
    watcher, job = ops(), record("a")
    watcher.on_job(job)
    state.transition(job.job, JobStatus.PROCESSING)
    assert list(watcher.running) == ["a"]
    state.transition(job.job, JobStatus.COMPLETED)
    watcher.on_job(job)
    await watcher.flush()
    jobs, errors = await watcher.store.recent()
    assert watcher.running == {}
    assert len(jobs) == 1
    assert b'"status":"completed"' in jobs[0]
    assert b'"owner":"ann"' in jobs[0]
    assert errors == []


async def test_a_job_handed_back_is_no_longer_running_nor_recent() -> None:
    """Shutdown hands the job back (queued again): it leaves the running list, unrecorded."""
    watcher, job = ops(), record("b")
    watcher.on_job(job)
    state.transition(job.job, JobStatus.PROCESSING)
    state.transition(job.job, JobStatus.QUEUED)
    watcher.on_job(job)
    await watcher.flush()
    assert watcher.running == {}
    assert await watcher.store.recent() == ([], [])


async def test_failures_of_the_service_are_errors_the_callers_are_not() -> None:
    """storage_unavailable goes to the error log with its ids; no_files_available does not."""
    watcher = ops()
    for job_id, code in (("c", "storage_unavailable"), ("d", "no_files_available")):
        job = record(job_id)
        watcher.on_job(job)
        state.transition(job.job, JobStatus.FAILED, JobError(code=code, message="x"))
        watcher.on_job(job)
    await watcher.flush()
    jobs, errors = await watcher.store.recent()
    assert len(jobs) == 2
    assert len(errors) == 1
    assert b'"jobId":"c"' in errors[0]
    assert b'"requestId":"req-c"' in errors[0]


async def test_a_crash_logged_before_a_flush_is_the_failures_only_error() -> None:
    """The crash's log line (with its exception) is the job's error; the failure that
    follows adds none, even when the buffer was flushed in between."""
    watcher, job = ops(), record("e")
    watcher.on_job(job)
    state.transition(job.job, JobStatus.PROCESSING)
    crash = logging.LogRecord("delineate.jobs", logging.ERROR, __file__, 1, "job crashed", (), None)
    crash.job_id = "e"
    try:
        raise IsADirectoryError("downloads/70007.zip")
    except OSError as exc:
        crash.exc_info = (type(exc), exc, exc.__traceback__)
    ErrorLog("r1", watcher.on_error).emit(crash)
    await watcher.flush()  # the dashboard's loop runs between the two
    state.transition(job.job, JobStatus.FAILED, JobError(code="internal_error", message="x"))
    watcher.on_job(job)
    await watcher.flush()
    _, errors = await watcher.store.recent()
    assert len(errors) == 1
    assert b"IsADirectoryError" in errors[0]

"""The job state machine: legal moves only, terminal states are final, progress arithmetic."""

import pytest

from delineate.jobs import state
from delineate_protocol.frames import FileState, JobError, JobStatus


def job(n: int = 2):
    return state.new_job("00000000-0000-4000-8000-000000000000", [70000 + 7 * i for i in range(n)])


def test_new_job_is_queued_with_pending_files() -> None:
    """A new job is queued, knows its file count, and every file is pending."""
    j = job(3)
    assert j.status is JobStatus.QUEUED
    assert j.total_file_ids == 3
    assert {f.state for f in j.files} == {FileState.PENDING}


def test_processing_stamps_start_and_counts_attempts() -> None:
    """Each start counts an attempt; started_at is set once."""
    j = job()
    state.transition(j, JobStatus.PROCESSING)
    first = j.started_at
    state.transition(j, JobStatus.QUEUED)
    state.transition(j, JobStatus.PROCESSING)
    assert j.attempt == 2
    assert j.started_at == first


@pytest.mark.parametrize("terminal", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
@pytest.mark.parametrize("target", list(JobStatus))
def test_terminal_states_are_final(terminal: JobStatus, target: JobStatus) -> None:
    """No move leaves a terminal state; trying raises a 409-mapped error."""
    j = job()
    state.transition(j, JobStatus.PROCESSING)
    state.transition(j, terminal)
    with pytest.raises(state.IllegalTransition):
        state.transition(j, target)
    assert j.status is terminal


def test_queued_cannot_complete() -> None:
    """A job that never ran cannot be completed."""
    with pytest.raises(state.IllegalTransition):
        state.transition(job(), JobStatus.COMPLETED)


def test_failure_records_error_and_finish_time() -> None:
    """A failed job carries its error code and a finish time."""
    j = job()
    state.transition(j, JobStatus.PROCESSING)
    state.transition(j, JobStatus.FAILED, JobError(code="x", message="y"))
    assert j.error == JobError(code="x", message="y")
    assert j.finished_at is not None


def test_progress_follows_bytes() -> None:
    """Progress is bytes done over bytes of available files, and reaches 100 on completion."""
    j = job(2)
    a, b = j.files
    state.mark_available(j, a, 300)
    state.mark_unavailable(b)
    state.add_bytes(j, a, 100)
    assert j.progress == 33.3
    state.add_bytes(j, a, 200)
    state.mark_done(j, a)
    assert (j.progress, j.files_done, a.state, b.state) == (100.0, 1, "done", "unavailable")


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 0, 0.0), (0, 10, 0.0), (999, 1000, 99.9), (9999, 10000, 99.9), (10, 10, 100.0)],
)
def test_percent_never_rounds_up_to_100(done: int, total: int, expected: float) -> None:
    """A bar shows 100 only when everything is done."""
    assert state.percent(done, total) == expected


def test_reset_progress_forgets_an_attempt() -> None:
    """A re-run starts counting from zero."""
    j = job(1)
    state.mark_available(j, j.files[0], 10)
    state.add_bytes(j, j.files[0], 10)
    state.reset_progress(j)
    assert (j.bytes_done, j.bytes_total, j.progress, j.files[0].available) == (0, 0, 0.0, None)

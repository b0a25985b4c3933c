"""The checker over hand-made histories: for each invariant, one history that breaks it (it
must be caught) and one that keeps it (nothing reported). Pure: no process, no socket."""

from __future__ import annotations

import pytest

from tests.chaos.checker import Violation, check
from tests.chaos.history import Connection, Job, Op, Seen, Trial, Watcher

JOB = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
REFERENCE = [("e1", 1, "status"), ("e1", 2, "progress"), ("e1", 3, "file"), ("e1", 4, "completed")]


def frame(kind: str, seq: int, epoch: str = "e1", **fields: object) -> Seen:
    status = kind if kind in ("completed", "failed", "cancelled") else None
    seen = Seen(kind, seq, epoch, t=10.0 + seq / 10, status=status)
    for name, value in fields.items():
        setattr(seen, name, value)
    return seen


def snapshot(seq: int, status: str = "processing", epoch: str = "e1", **fields: object) -> Seen:
    return frame("snapshot", seq, epoch, status=status, **fields)


def completed_job(job_id: str = JOB) -> Job:
    job = Job(job_id, "alice", final={"status": "completed", "seq": 4, "epoch": "e1"})
    job.settled, job.terminal_at = True, 10.4
    job.bundles, job.download_ok = [f"exports/{job_id}.1.zip"], True
    job.reference = list(REFERENCE)
    return job


def watcher(*seen: Seen, transport: str = "ws", end: str = "terminal") -> Watcher:
    w = Watcher("w", JOB, transport, "alice", seen=list(seen), end=end)
    w.ended_at = max((s.t for s in seen), default=10.0) + 0.1
    return w


def trial(*watchers: Watcher, jobs: list[Job] | None = None, ops: list[Op] | None = None) -> Trial:
    made = Trial(seed=1, index=0, watchers=list(watchers), ops=ops or [])
    for job in jobs if jobs is not None else [completed_job()]:
        made.jobs[job.job_id] = job
    return made


def found(history: Trial) -> set[str]:
    return {v.invariant for v in check(history)}


GOOD_STREAM = [snapshot(1), frame("progress", 2), frame("file", 3), frame("completed", 4)]


def test_a_clean_history_has_no_violation() -> None:
    """Every watcher saw every frame once, in order, ending completed with a valid bundle."""
    history = trial(watcher(*GOOD_STREAM), watcher(*GOOD_STREAM[2:], transport="mux"))
    assert check(history) == []


def test_a_job_that_never_ends_is_caught() -> None:
    job = completed_job()
    job.final, job.settled = {"status": "processing"}, False
    assert "terminal" in found(trial(jobs=[job]))


def test_a_lost_job_is_legal_only_after_redis_lost_its_data() -> None:
    job = completed_job()
    job.final = {"status": "failed", "error": {"code": "job_lost"}}
    job.bundles, job.reference = [f"exports/{JOB}.1.zip"], []
    history = trial(watcher(*GOOD_STREAM), jobs=[job])
    assert "terminal" in found(history)
    history.wipes.append(5.0)
    assert check(history) == []


def test_two_stored_terminal_frames_are_caught() -> None:
    job = completed_job()
    job.reference = [*REFERENCE, ("e1", 5, "completed")]
    assert "terminal" in found(trial(jobs=[job]))


def test_a_watcher_ending_on_another_state_than_the_job_is_caught() -> None:
    cancelled = [snapshot(1), frame("cancelled", 2)]
    assert "agreement" in found(trial(watcher(*cancelled)))
    assert "agreement" not in found(trial(watcher(*GOOD_STREAM)))


def test_a_job_said_not_to_exist_is_caught_unless_a_failover_was_still_settling() -> None:
    """Split brain after a primary's kill: a read that reached the node without the job
    answers 404 until the old primary follows the new one."""
    told_gone = watcher(snapshot(1), transport="poll", end="gone")
    history = trial(told_gone)
    assert "agreement" in found(history)
    history.wipes = [10.0, 30.0]
    assert "agreement" not in found(history)


def test_a_completed_job_needs_exactly_one_bundle_that_downloads() -> None:
    two = completed_job()
    two.bundles.append(f"exports/{JOB}.2.zip")
    broken = completed_job()
    broken.download_ok, broken.download_detail = False, "404"
    none = completed_job()
    none.bundles = []
    for job in (two, broken, none):
        assert "bundle" in found(trial(jobs=[job]))
    assert "bundle" not in found(trial(jobs=[completed_job()]))


def test_a_job_that_completed_while_a_failover_settled_is_not_held_to_its_bundle() -> None:
    """Split brain: an attempt told "fenced" by the old primary (whose writes the group
    then discards) removes its bundle, while the new primary keeps its completion. Redis
    without min-replicas-to-write cannot promise more; a job that ended after the window
    still needs its one bundle."""
    broken = completed_job()
    broken.download_ok, broken.download_detail = False, "404"
    history = trial(jobs=[broken])
    history.wipes = [10.0, 30.0]
    assert "bundle" not in found(history)
    history.wipes = [5.0, 8.0]
    assert "bundle" in found(history)


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_a_cancelled_or_failed_job_leaves_no_object(status: str) -> None:
    job = completed_job()
    job.final = {"status": status}
    job.reference = [("e1", 1, "status"), ("e1", 2, status)]
    assert "bundle" in found(trial(jobs=[job]))
    job.bundles = []
    assert check(trial(jobs=[job])) == []


def test_a_frame_after_a_terminal_frame_is_caught() -> None:
    after = watcher(*GOOD_STREAM, frame("progress", 5))
    twice = watcher(*GOOD_STREAM, frame("completed", 5))
    terminal_snapshot = watcher(snapshot(4, "completed"), frame("status", 5))
    for bad in (after, twice, terminal_snapshot):
        assert "after_terminal" in found(trial(bad))
    assert "after_terminal" not in found(trial(watcher(snapshot(4, "completed"))))


def test_seq_that_does_not_increase_within_an_epoch_is_caught() -> None:
    again = watcher(snapshot(1), frame("progress", 2), frame("progress", 2), frame("completed", 4))
    back = watcher(snapshot(2), frame("progress", 1), frame("completed", 4))
    assert "order" in found(trial(again))
    assert "order" in found(trial(back))


def test_a_missed_frame_must_be_announced_unless_it_was_progress() -> None:
    """A skipped ``file`` frame is a silent loss; a skipped ``progress`` frame is a slow
    reader's outbox keeping only the newest; a seq with no stored frame loses nothing."""
    lost_file = watcher(snapshot(1), frame("progress", 2), frame("completed", 4))
    coalesced = watcher(snapshot(1), frame("file", 3), frame("completed", 4))
    announced = watcher(snapshot(1), snapshot(3, recovered=False), frame("completed", 4))
    assert "gap" in found(trial(lost_file))
    assert "gap" not in found(trial(coalesced))
    assert "gap" not in found(trial(announced))
    hole = completed_job()
    hole.reference = [r for r in REFERENCE if r[1] != 3]
    assert "gap" not in found(trial(lost_file, jobs=[hole]))


def test_a_frame_other_than_the_stored_one_at_its_seq_is_caught() -> None:
    """A takeover that wrote at the seqs of frames a failover took from the store: the
    watcher saw a progress frame where the history holds the new attempt's status frame."""
    job = completed_job()
    job.reference = [("e1", 1, "status"), ("e1", 2, "status"), ("e1", 3, "completed")]
    seen = [snapshot(1), frame("progress", 2), frame("completed", 3)]
    assert found(trial(watcher(*seen), jobs=[job])) == {"history"}
    job.reference = [("e1", 1, "status"), ("e1", 2, "progress"), ("e1", 3, "completed")]
    assert check(trial(watcher(*seen), jobs=[job])) == []


def test_a_replay_from_the_start_begins_at_seq_1_or_says_it_cannot() -> None:
    def from_start(*seen: Seen) -> Watcher:
        w = watcher(*seen)
        w.connections = [Connection("replica-0", "0", 9.0)]
        return w

    whole = from_start(frame("status", 1), *GOOD_STREAM[1:])
    partial = from_start(*GOOD_STREAM[1:])
    told = from_start(snapshot(3, recovered=False), frame("completed", 4))
    assert "gap" in found(trial(partial))
    assert check(trial(whole)) == []
    assert check(trial(told)) == []


def test_an_epoch_change_must_come_with_a_recovered_false_snapshot() -> None:
    job = completed_job()
    job.final = {"status": "completed", "epoch": "e2"}
    job.reference = [("e2", 6, "completed")]
    silent = watcher(snapshot(1), frame("progress", 2), frame("completed", 6, epoch="e2"))
    recovered = watcher(snapshot(1), snapshot(5, epoch="e2"), frame("completed", 6, epoch="e2"))
    moved = watcher(
        snapshot(1), snapshot(5, epoch="e2", recovered=False), frame("completed", 6, epoch="e2")
    )
    assert "gap" in found(trial(silent, jobs=[job]))
    assert "gap" in found(trial(recovered, jobs=[job]))
    assert check(trial(moved, jobs=[job])) == []


def initiate(owner: str, key: str, job_id: str, *, replayed: bool, t: float = 1.0) -> Op:
    op = Op("initiate", owner, t, t + 0.1, job_id=job_id, key=key, code=202)
    op.replayed = replayed
    return op


def test_one_key_per_owner_makes_one_job_and_replays_say_so() -> None:
    jobs = [completed_job(), completed_job(OTHER)]
    two_jobs = [
        initiate("alice", "k", JOB, replayed=False),
        initiate("alice", "k", OTHER, replayed=True),
    ]
    unmarked = [
        initiate("alice", "k", JOB, replayed=False),
        initiate("alice", "k", JOB, replayed=False),
    ]
    shared = [initiate("alice", "k", JOB, replayed=False), initiate("bob", "k", JOB, replayed=True)]
    for ops in (two_jobs, unmarked, shared):
        assert "idempotency" in found(trial(jobs=jobs, ops=ops))
    good = [
        initiate("alice", "k", JOB, replayed=False),
        initiate("alice", "k", JOB, replayed=True),
        initiate("bob", "k", OTHER, replayed=False),
    ]
    assert check(trial(jobs=jobs, ops=good)) == []


def test_a_key_forgotten_with_redis_may_make_a_new_job_after_the_wipe() -> None:
    jobs = [completed_job(), completed_job(OTHER)]
    ops = [
        initiate("alice", "k", JOB, replayed=False, t=1.0),
        initiate("alice", "k", OTHER, replayed=False, t=9.0),
    ]
    history = trial(jobs=jobs, ops=ops)
    assert "idempotency" in found(history)
    history.wipes.append(5.0)
    assert "idempotency" not in found(history)
    spanning = initiate("alice", "k", OTHER, replayed=False, t=4.0)
    spanning.t_end = 6.0  # answered after the wipe: it may have run before or after it
    history.ops = [ops[0], spanning]
    assert "idempotency" not in found(history)


def test_a_job_lost_with_its_key_does_not_count_against_the_retry_that_made_another() -> None:
    """Split brain after a primary's kill: the old primary took the key and its job, then
    rejoined as a replica without them (the job answers 404); the other primary made a job
    for the same key within the same unsettled window."""
    lost = Job(JOB, "alice", final=None)
    lost.settled = True
    jobs = [lost, completed_job(OTHER)]
    ops = [
        initiate("alice", "k", JOB, replayed=False, t=6.0),
        initiate("alice", "k", OTHER, replayed=False, t=6.1),
    ]
    history = trial(jobs=jobs, ops=ops)
    history.wipes = [5.0, 20.0]
    assert "idempotency" not in found(history)
    history.wipes = []
    assert "idempotency" in found(history)


def cancel(code: int, status: str) -> Op:
    return Op("cancel", "alice", 1.0, 1.1, job_id=JOB, code=code, status=status)


def test_a_cancel_answer_matches_the_outcome() -> None:
    cancelled = completed_job()
    cancelled.final, cancelled.bundles = {"status": "cancelled"}, []
    cancelled.reference = [("e1", 1, "status"), ("e1", 2, "cancelled")]
    assert "cancel" in found(trial(ops=[cancel(200, "cancelled")]))  # the job completed
    assert "cancel" in found(trial(jobs=[cancelled], ops=[cancel(409, "completed")]))
    assert "cancel" in found(trial(ops=[cancel(409, "processing")]))
    assert check(trial(ops=[cancel(409, "completed")])) == []
    assert check(trial(jobs=[cancelled], ops=[cancel(200, "cancelled")])) == []


def test_a_watcher_that_never_stops_or_stops_late_hangs() -> None:
    never = watcher(*GOOD_STREAM[:2], end="")
    never.ended_at = None
    late = watcher(*GOOD_STREAM)
    late.ended_at = 10.4 + 25
    gave_up = watcher(*GOOD_STREAM[:2], end="gave_up")
    for bad in (never, late, gave_up):
        assert "hang" in found(trial(bad))
    assert "hang" not in found(trial(watcher(*GOOD_STREAM)))


def test_another_owner_reading_a_job_is_caught() -> None:
    leak = Op("foreign_status", "bob", 1.0, 1.1, job_id=JOB, code=200)
    hidden = Op("foreign_status", "bob", 1.0, 1.1, job_id=JOB, code=404)
    away = Op("foreign_status", "bob", 1.0, 1.1, job_id=JOB, code=503)
    conflict = Op("foreign_status", "bob", 1.0, 1.1, job_id=JOB, code=409)
    assert "isolation" in found(trial(ops=[leak]))
    assert "isolation" in found(trial(ops=[conflict]))
    assert check(trial(ops=[hidden, away])) == []


def test_a_polled_terminal_status_that_changes_is_caught() -> None:
    def poll(status: str, seq: int) -> Seen:
        return Seen("poll", seq, "e1", t=10.0 + seq, status=status)

    flip = watcher(poll("completed", 4), poll("processing", 5), transport="poll")
    steady = watcher(poll("processing", 2), poll("completed", 4), poll("completed", 4))
    steady.transport = "poll"
    assert "final" in found(trial(flip))
    assert check(trial(steady)) == []
    failover = trial(flip)
    failover.wipes = [13.0, 20.0]  # the completed state was written to a primary then killed
    assert "final" not in found(failover)
    failover.wipes = [12.0, 13.5]  # read after the loss was over: final for good
    assert "final" in found(failover)


def test_violations_say_what_and_where() -> None:
    history = trial(watcher(*GOOD_STREAM, frame("progress", 5)))
    [violation] = [v for v in check(history) if v.invariant == "after_terminal"]
    assert isinstance(violation, Violation)
    assert violation.job_id == JOB
    assert "progress e1:5 after completed" in violation.detail
    assert len(violation.to_dict()["evidence"]) == 2

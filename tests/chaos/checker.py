"""The invariants of docs/guarantees.md, checked over one trial's whole history (pure).

``check(trial)`` returns every violation found, each naming its invariant, its job and the
part of the history that shows it. A job that ended ``lost`` (404, or failed with
``job_lost``) in a trial where Redis came back empty is a legal outcome: Redis forgot it, so
what watchers saw before and the bundle it may have left are not held against the server.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import LOST, TERMINAL, Job, Op, Seen, Trial, Watcher

INVARIANTS = (
    "terminal",  # every job ends in exactly one terminal state
    "agreement",  # the status document and every watcher's last frame name the same state
    "bundle",  # completed <=> one valid bundle; cancelled or failed <=> none
    "after_terminal",  # nothing after a terminal frame, never two terminal frames
    "order",  # seq strictly increases within an epoch
    "history",  # a frame seen at (epoch, seq) is the stored history's frame there
    "gap",  # a skipped frame or an epoch change is announced by a recovered=false snapshot
    "idempotency",  # one Idempotency-Key per owner -> one job; replays say so
    "cancel",  # 200 -> cancelled; 409 -> it had ended otherwise
    "hang",  # every watcher stops within a bound after its job's terminal state
    "isolation",  # another owner's job answers 404
    "final",  # a terminal status document never changes again
)


@dataclass
class Violation:
    invariant: str
    job_id: str | None
    detail: str
    evidence: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "jobId": self.job_id,
            "detail": self.detail,
            "evidence": [repr(item) for item in self.evidence],
        }


Check = Callable[[Trial], Iterator[Violation]]


def check(trial: Trial) -> list[Violation]:
    return [v for rule in RULES for v in rule(trial)]


def forgiven(trial: Trial, job: Job) -> bool:
    """A lost job in a trial where Redis lost its data: not held against the server."""
    return job.lost and bool(trial.wipes)


# --- one terminal state, agreed on by everyone, matching the bucket ----------------------


def terminal_states(trial: Trial) -> Iterator[Violation]:
    for job in trial.jobs.values():
        status = job.final_status
        if status is None:
            yield Violation("terminal", job.job_id, "no final state could be read", [job.final])
        elif status == LOST or job.lost:
            if not trial.wipes:
                yield Violation(
                    "terminal", job.job_id, "lost although Redis kept its data", [job.final]
                )
        elif status not in TERMINAL:
            yield Violation("terminal", job.job_id, f"never ended: {status}", [job.final])
        yield from stored_terminals(trial, job)


def stored_terminals(trial: Trial, job: Job) -> Iterator[Violation]:
    """The job's stored history holds one terminal frame, its last, naming its status."""
    if job.reference is None or forgiven(trial, job):
        return
    ends = [(epoch, seq, kind) for epoch, seq, kind in job.reference if kind in TERMINAL]
    if len(ends) > 1:
        yield Violation("terminal", job.job_id, f"{len(ends)} terminal frames stored", ends)
    if ends and (ends[-1] != job.reference[-1] or ends[-1][2] != job.final_status):
        yield Violation(
            "terminal", job.job_id, f"stored history ends {job.reference[-1]}", [job.final]
        )


def agreement(trial: Trial) -> Iterator[Violation]:
    for watcher in trial.watchers:
        job = trial.jobs[watcher.job_id]
        if forgiven(trial, job) or job.final_status is None or not watcher.seen:
            continue
        last = watcher.seen[-1]
        if watcher.end == "terminal" and last.status != job.final_status:
            yield Violation(
                "agreement",
                job.job_id,
                f"{watcher.name} ended on {last.status}, the job is {job.final_status}",
                [last, job.final],
            )
        if watcher.end == "gone" and not undoable(trial, watcher.ended_at or 0.0):
            yield Violation(
                "agreement", job.job_id, f"{watcher.name} was told the job does not exist", []
            )


def bundles(trial: Trial) -> Iterator[Violation]:
    for job in trial.jobs.values():
        status = job.final_status
        if forgiven(trial, job) or status not in TERMINAL:
            continue
        zips = [key for key in job.bundles if key.endswith(".zip")]
        if status == "completed" and job.terminal_at and undoable(trial, job.terminal_at):
            continue  # ended in a split brain: an attempt may have acted on discarded answers
        if status == "completed":
            if len(zips) != 1 or len(job.bundles) != 1:
                yield Violation(
                    "bundle", job.job_id, f"completed with {len(job.bundles)} objects", job.bundles
                )
            if job.download_ok is not True:
                yield Violation(
                    "bundle", job.job_id, f"downloadUrl failed: {job.download_detail}", [job.final]
                )
        elif job.bundles:
            yield Violation("bundle", job.job_id, f"{status} but objects remain", job.bundles)


# --- each watcher's stream ---------------------------------------------------------------


def streams(trial: Trial) -> Iterator[Violation]:
    for watcher in trial.watchers:
        if watcher.transport == "poll":
            continue
        job = trial.jobs[watcher.job_id]
        yield from stream_of(watcher, job, trial)
        yield from as_stored(watcher, job)


def as_stored(watcher: Watcher, job: Job) -> Iterator[Violation]:
    """Every frame a watcher saw at an (epoch, seq) the stored history still holds is of that
    frame's type: two writers never put different frames at one position (a writer whose
    view came from a store that lost writes must not reuse the seqs watchers saw)."""
    stored = {(epoch, seq): kind for epoch, seq, kind in job.reference or []}
    for frame in watcher.seen:
        kind = stored.get((frame.epoch, frame.seq))
        if frame.type != "snapshot" and kind is not None and kind != frame.type:
            yield Violation(
                "history", job.job_id,
                f"{watcher.name}: {frame.type} at {frame.epoch}:{frame.seq}, stored {kind}",
                [frame],
            )  # fmt: skip


def stream_of(watcher: Watcher, job: Job, trial: Trial) -> Iterator[Violation]:
    ended: Seen | None = None
    kept: Seen | None = None
    yield from replayed_from_start(watcher, job)
    for frame in watcher.seen:
        where = f"{watcher.name}: {frame.type} {frame.epoch}:{frame.seq}"
        if ended is not None:
            yield Violation(
                "after_terminal", job.job_id, f"{where} after {ended.type}", [ended, frame]
            )
        if frame.terminal:
            ended = ended or frame
        if kept is not None:
            yield from step(kept, frame, where, job, trial)
        kept = frame


def replayed_from_start(watcher: Watcher, job: Job) -> Iterator[Violation]:
    """A watcher that first asked for everything (since=0) starts at seq 1, or is told by
    a recovered=false snapshot that the history is not all there."""
    first_ask = watcher.connections[0].since if watcher.connections else None
    if first_ask != "0" or not watcher.seen:
        return
    first = watcher.seen[0]
    if first.seq != 1 and not (first.type == "snapshot" and not first.recovered):
        yield Violation(
            "gap", job.job_id, f"{watcher.name}: since=0 began at {first.type} {first.seq}", [first]
        )


def step(kept: Seen, frame: Seen, where: str, job: Job, trial: Trial) -> Iterator[Violation]:
    """``frame`` right after ``kept`` on one watcher's stream."""
    announced = frame.type == "snapshot" and not frame.recovered
    if frame.epoch != kept.epoch:
        if not announced:
            yield Violation("gap", job.job_id, f"{where}: epoch changed unannounced", [kept, frame])
        return
    if frame.seq <= kept.seq:
        yield Violation("order", job.job_id, f"{where} after seq {kept.seq}", [kept, frame])
        return
    if frame.seq == kept.seq + 1 or announced:
        return
    missed = [(frame.epoch, seq) for seq in range(kept.seq + 1, frame.seq)]
    lost = [at for at in missed if not skippable(job, at, trial)]
    if lost:
        yield Violation(
            "gap", job.job_id, f"{where}: frames {lost} missed unannounced", [kept, frame]
        )


def skippable(job: Job, at: tuple[str, int], trial: Trial) -> bool:
    """May a watcher miss the frame at ``at`` without a snapshot? A ``progress`` frame (a
    slow reader's outbox keeps only the newest), or a seq that holds no frame in the job's
    history. Unknown (the history is gone with Redis's data): only after a wipe."""
    if job.reference is None or at[0] not in {epoch for epoch, _, _ in job.reference}:
        return bool(trial.wipes)
    kinds = {(epoch, seq): kind for epoch, seq, kind in job.reference}
    return kinds.get(at, "progress") == "progress"


def polled(trial: Trial) -> Iterator[Violation]:
    """A status document read as terminal stays exactly that."""
    for watcher in trial.watchers:
        job = trial.jobs[watcher.job_id]
        if watcher.transport != "poll" or forgiven(trial, job):
            continue
        first = next((seen for seen in watcher.seen if seen.terminal), None)
        if first is None or undoable(trial, first.t):
            continue
        for later in watcher.seen[watcher.seen.index(first) + 1 :]:
            if later.status != first.status:
                yield Violation(
                    "final", job.job_id, f"{watcher.name}: {first.status} became {later.status}",
                    [first, later],
                )  # fmt: skip


def undoable(trial: Trial, t: float) -> bool:
    """Was a state read at ``t`` still open to a data loss (a wipe, or a failover that drops
    what had not reached the replica)? Then the job may go back to what Redis kept."""
    return bool(trial.wipes) and t <= max(trial.wipes)


def hangs(trial: Trial) -> Iterator[Violation]:
    for watcher in trial.watchers:
        job = trial.jobs[watcher.job_id]
        if watcher.ended_at is None:
            yield Violation("hang", job.job_id, f"{watcher.name} never stopped ({watcher.end})")
            continue
        if watcher.end == "gave_up" and not forgiven(trial, job):
            yield Violation("hang", job.job_id, f"{watcher.name} gave up without an end")
        if job.terminal_at is not None and watcher.ended_at - job.terminal_at > trial.hang_bound_s:
            late = watcher.ended_at - job.terminal_at
            yield Violation("hang", job.job_id, f"{watcher.name} ended {late:.1f} s after the job")


# --- client operations ---------------------------------------------------------------------


def idempotency(trial: Trial) -> Iterator[Violation]:
    groups: dict[tuple[str, str, int], list[Op]] = defaultdict(list)
    for op in trial.ops:
        if op.kind == "initiate" and op.key is not None and op.code == 202:
            made = trial.jobs.get(str(op.job_id))
            if made is not None and forgiven(trial, made):
                continue  # its key went with the data: a retry rightly made another job
            era = trial.era(op.t_start)
            if era == trial.era(op.t_end):  # one that spans a wipe may have run in either
                groups[(op.owner, op.key, era)].append(op)
    for (owner, key, _), answers in groups.items():
        jobs = sorted({str(op.job_id) for op in answers})
        if len(jobs) > 1:
            yield Violation(
                "idempotency", jobs[0], f"{owner}'s key {key} made {len(jobs)} jobs", answers
            )
        fresh = [op for op in answers if not op.replayed]
        if len(fresh) > 1:
            yield Violation(
                "idempotency", jobs[0], f"{len(fresh)} answers to {key} not marked replayed", fresh
            )
    yield from shared_keys(trial)


def shared_keys(trial: Trial) -> Iterator[Violation]:
    """The same key from two owners: two jobs (never one owner's job in another's answer)."""
    by_key: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for op in trial.ops:
        if op.kind == "initiate" and op.key is not None and op.code == 202:
            by_key[op.key][op.owner].add(str(op.job_id))
    for key, owners in by_key.items():
        for a, b in itertools.combinations(sorted(owners), 2):
            if owners[a] & owners[b]:
                yield Violation("idempotency", None, f"key {key} gave {a} and {b} one job")


def cancels(trial: Trial) -> Iterator[Violation]:
    for op in trial.ops:
        if op.kind != "cancel" or op.job_id not in trial.jobs:
            continue
        job = trial.jobs[op.job_id]
        status = job.final_status
        if forgiven(trial, job) or status is None:
            continue
        if op.code == 200 and status != "cancelled":
            yield Violation("cancel", job.job_id, f"cancel answered 200, job {status}", [op])
        if op.code == 409 and status == "cancelled":
            yield Violation("cancel", job.job_id, "cancel answered 409, job cancelled", [op])
        if op.code == 409 and op.status not in TERMINAL:
            yield Violation("cancel", job.job_id, f"409 naming {op.status}", [op])


def isolation(trial: Trial) -> Iterator[Violation]:
    for op in trial.ops:
        # 404 (no such job, as for any unknown id) or 5xx (unavailable) reveals nothing.
        if op.kind == "foreign_status" and op.code is not None and op.code != 404 and op.code < 500:
            yield Violation("isolation", op.job_id, f"another owner read it: {op.code}", [op])


RULES: list[Check] = [
    terminal_states,
    agreement,
    bundles,
    streams,
    polled,
    hangs,
    idempotency,
    cancels,
    isolation,
]

"""The Journal: writes a job's frames, everywhere they have to go, in the right order.

A write is guarded (``journal.fencing``: the job has not ended, the writer holds the job's
current attempt, its view of the stream is the stored one), then the frames take the job's
next seqs, the record is saved at the last of them (job store), and the frames are kept in
the job's history and fanned out (broker). Saving before publishing is what makes resume
exact: a snapshot read at seq S reflects every frame up to S, so a watcher needs only the
frames after S.

This base class does it with the in-process store and broker, whose calls never suspend,
so the check and the writes happen in one step of the event loop. The Redis journal
(``delineate.journal.redis``) does the same in one script.
"""

from __future__ import annotations

from collections.abc import Callable

from delineate.broker.base import Broker
from delineate.jobstore.base import JobStore
from delineate.journal import fencing
from delineate.journal.fencing import Superseded, WriteMode
from delineate.record import JobRecord, new_epoch
from delineate_protocol.frames import TERMINAL_FRAME_TYPES, AnyFrame, JobStatus, encoder

__all__ = ["BuildFrame", "Journal", "Superseded", "WriteMode", "build_frames", "is_terminal"]

BuildFrame = Callable[[str, int], AnyFrame]
"""Makes the frame for (job id, seq)."""


def is_terminal(frame: AnyFrame) -> bool:
    return frame.__struct_config__.tag in TERMINAL_FRAME_TYPES


def build_frames(record: JobRecord, builds: list[BuildFrame]) -> list[AnyFrame]:
    """The frames at the seqs after ``record``'s, in its epoch; the record moves to the last."""
    job = record.job
    frames = [build(job.job_id, job.seq + 1 + i) for i, build in enumerate(builds)]
    for frame in frames:
        frame.trace_id, frame.epoch = job.trace_id, job.epoch
    job.seq += len(frames)
    return frames


class Journal:
    def __init__(self, broker: Broker, store: JobStore) -> None:
        self.broker, self.store = broker, store

    async def append(
        self,
        record: JobRecord,
        build: BuildFrame,
        *,
        mode: WriteMode = WriteMode.WORKER,
        expect: JobStatus | None = None,
    ) -> AnyFrame:
        """Write the frame ``build`` makes at the job's next seq, with ``record`` saved at
        that seq (``record.job.seq`` is set). Refused writes raise ``Superseded``."""
        return (await self.append_many(record, [build], mode=mode, expect=expect))[0]

    async def append_many(
        self,
        record: JobRecord,
        builds: list[BuildFrame],
        *,
        mode: WriteMode = WriteMode.WORKER,
        expect: JobStatus | None = None,
    ) -> list[AnyFrame]:
        """Frames a job makes at one moment, at its next seqs in order, in one guarded write;
        they are published as one message, which a replica delivers together."""
        job = record.job
        head = await self.store.head(job.job_id)
        fencing.check(head, record, mode, expect)
        if not fencing.matches(head, record):
            fencing.reconcile(head, record)
        if fencing.takes_over(mode, expect):
            job.epoch = new_epoch()
        frames = build_frames(record, builds)
        await self.store.save(record)
        encoded = [(frame.seq, encoder.encode(frame)) for frame in frames]
        await self.broker.publish(job.job_id, job.epoch, encoded, terminal=is_terminal(frames[-1]))
        return frames

    async def aclose(self) -> None:
        """Release what the journal holds of its own (the broker and store are not its)."""

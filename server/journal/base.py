"""The Journal: writes one frame of a job, everywhere it has to go, in the right order.

A frame gets the job's next ``seq`` (broker), the job's record is saved at that seq (job
store), then the frame is kept in the job's history and fanned out (broker). Saving before
publishing is what makes resume exact: a snapshot read at seq S reflects every frame up to
S, so a watcher needs only the frames after S.

This base class does it with any broker and job store, in three calls. A backend where
both live in one place does it in one (``server.journal.redis``); the order and the
results are the same.
"""

from __future__ import annotations

from collections.abc import Callable

from server.broker.base import Broker
from server.frames import TERMINAL_FRAME_TYPES, AnyFrame, JobStatus, encoder
from server.jobs.state import JobRecord
from server.jobstore.base import JobStore

BuildFrame = Callable[[str, int], AnyFrame]
"""Makes the frame for (job id, seq)."""


class Superseded(Exception):
    """The stored job moved on (cancelled, or taken by another worker) before this write."""


def is_terminal(frame: AnyFrame) -> bool:
    return frame.__struct_config__.tag in TERMINAL_FRAME_TYPES


class Journal:
    def __init__(self, broker: Broker, store: JobStore) -> None:
        self.broker, self.store = broker, store

    async def append(
        self, record: JobRecord, build: BuildFrame, *, expect: JobStatus | None = None
    ) -> AnyFrame:
        """Write the frame ``build`` makes at the job's next seq, with ``record`` saved at
        that seq (``record.job.seq`` is set). With ``expect``, only if the stored status
        still is that, else ``Superseded``."""
        return (await self.append_many(record, [build], expect=expect))[0]

    async def append_many(
        self, record: JobRecord, builds: list[BuildFrame], *, expect: JobStatus | None = None
    ) -> list[AnyFrame]:
        """Frames a job makes at one moment, at its next seqs in order (``expect`` is
        checked for the first). Here one after another; a backend that can writes them in
        one step and publishes them as one message, which a replica delivers together."""
        frames = []
        for i, build in enumerate(builds):
            frames.append(await self._append_one(record, build, expect if i == 0 else None))
        return frames

    async def _append_one(
        self, record: JobRecord, build: BuildFrame, expect: JobStatus | None
    ) -> AnyFrame:
        job = record.job
        seq = await self.broker.next_seq(job.job_id)
        job.seq = seq
        frame = build(job.job_id, seq)
        frame.trace_id = job.trace_id
        if not await self.store.save(record, expect=expect):
            raise Superseded(f"job {job.job_id} is no longer {expect}")
        payload = encoder.encode(frame)
        await self.broker.publish(job.job_id, seq, payload, terminal=is_terminal(frame))
        return frame

    async def aclose(self) -> None:
        """Release what the journal holds of its own (the broker and store are not its)."""

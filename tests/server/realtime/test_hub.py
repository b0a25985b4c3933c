"""The hub over each broker (in-process, and a real redis-server): every watcher gets each of
its job's frames once, in order, however its watch and the job's frames interleave."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from delineate.broker.base import Broker
from delineate.errors import NotFound
from delineate.realtime import hub as hub_module
from delineate.realtime.hub import Hub
from delineate.realtime.outbox import Outbox, Outgoing
from delineate.realtime.resume import Since
from delineate_protocol.frames import JobSnapshot, JobStatus, ProgressFrame, encoder
from tests.support.brokers import broker_of

JOB = "7f7c2c52-0f5e-4a43-9d8e-3b0c6f1b9a10"
EPOCH = "e1"


class Job:
    """A job's writes, in the journal's order: the record's seq first, then the frame."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.seq = 0
        self.while_snapshot_read: Callable[[], Awaitable[object]] | None = None
        """Runs once, inside the next snapshot read: frames published meanwhile."""
        self.deaf = False
        """Frames published now never reach this replica (pub/sub lost them on the way)."""
        self.gone = False
        """The store lost the job: reads answer NotFound until ``lose`` writes its end."""
        self.reads = 0
        self.status, self.epoch = JobStatus.PROCESSING, EPOCH
        self.lost: list[tuple[str, str | None]] = []
        self.stays_lost = False
        """Its end cannot be written either (the store refuses, or is split)."""

    async def snapshot(self, job_id: str) -> JobSnapshot:
        self.reads += 1
        meanwhile, self.while_snapshot_read = self.while_snapshot_read, None
        if meanwhile is not None:
            await meanwhile()
        if self.gone:
            raise NotFound("no such job")
        return JobSnapshot(job_id=job_id, status=self.status, seq=self.seq, epoch=self.epoch)

    async def lose(self, job_id: str, owner: str | None) -> None:
        """The hub's ``on_lost``: the job's tombstone, failed, in a new epoch."""
        self.lost.append((job_id, owner))
        if not self.stays_lost:
            self.gone, self.status, self.epoch, self.seq = False, JobStatus.FAILED, "e2", 1

    async def save(self) -> int:
        """The record at the next seq; its frame is not published yet."""
        self.seq += 1
        return self.seq

    async def publish(self, seq: int) -> None:
        frame = ProgressFrame(
            job_id=JOB, seq=seq, progress=0.0, bytes_done=0, bytes_total=0,
            files_done=0, files_total=1,
        )  # fmt: skip
        frame.epoch = EPOCH
        await self.broker.publish(JOB, EPOCH, [(seq, encoder.encode(frame))], terminal=False)

    async def emit(self) -> int:
        seq = await self.save()
        await self.publish(seq)
        return seq

    async def emit_two(self) -> None:
        await self.emit()
        await self.emit()


@pytest.fixture(params=["memory", "redis"])
async def hub_job(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Hub, Job]]:
    async with broker_of(request.param, request, history_max_frames=1000) as broker:
        job = Job(broker)
        hub = Hub(broker, job.snapshot, on_lost=job.lose)

        def deliver(job_id: str, payload: bytes) -> None:
            if not job.deaf:
                hub.deliver(job_id, payload)

        await broker.start(deliver, lambda payload: None, hub.resync)
        yield hub, job
        await broker.stop()


async def received(outbox: Outbox, count: int) -> list[int]:
    return [seq for seq, _ in await received_items(outbox, count)]


async def received_items(outbox: Outbox, count: int) -> list[tuple[int, str]]:
    items = []
    async with asyncio.timeout(10):
        while len(items) < count:
            item = await outbox.get()
            assert item is not None
            items.append((item.seq, item.type))
    return items


async def test_frames_published_while_a_watch_reads_the_job_are_replayed_not_summarized(
    hub_job: tuple[Hub, Job],
) -> None:
    """Frames that land between the watch's reads of the job (snapshot, history) reach the
    watcher as themselves: the history is read after the snapshot, so it holds every frame
    the snapshot counts. (Read the other way round, frame 1 was lost to a snapshot.)"""
    hub, job = hub_job
    job.while_snapshot_read = job.emit_two
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box)
    assert await received_items(box, 2) == [(1, "progress"), (2, "progress")]


async def test_a_frame_saved_but_not_yet_published_comes_live(hub_job: tuple[Hub, Job]) -> None:
    """The job's record is at seq 1 but frame 1 is not in the history yet: a watcher from 0
    waits for it rather than getting a snapshot in its place."""
    hub, job = hub_job
    seq = await job.save()
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box)
    assert len(box) == 0
    await job.publish(seq)
    assert await received_items(box, 1) == [(1, "progress")]


async def test_a_watcher_back_before_the_last_one_let_go_still_gets_live_frames(
    hub_job: tuple[Hub, Job],
) -> None:
    """A page reload: the job's only watcher leaves and a new one arrives at once. Letting go
    of the channel must not cut the newcomer off."""
    hub, job = hub_job
    leaving = await hub.watch(JOB, Since(EPOCH, 0), Outbox(limit=64))
    hub.unwatch(leaving)
    arriving = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), arriving)
    await asyncio.sleep(0.1)  # let the release run
    assert [await job.emit() for _ in range(3)] == [1, 2, 3]
    assert await received(arriving, 3) == [1, 2, 3]


async def test_watchers_joining_while_frames_flow_get_each_frame_once(
    hub_job: tuple[Hub, Job],
) -> None:
    """Twenty watchers from seq 0 join at random moments of a stream of 150 frames: each
    gets 1..150 exactly once, in order (history, then live, merged without a gap)."""
    hub, job = hub_job
    rng = random.Random(11)
    outboxes = [Outbox(limit=1000) for _ in range(20)]

    async def join_later(outbox: Outbox) -> None:
        await asyncio.sleep(rng.uniform(0, 0.25))
        await hub.watch(JOB, Since(EPOCH, 0), outbox)

    async def stream() -> None:
        for _ in range(150):
            await job.emit()
            await asyncio.sleep(0.002)

    await asyncio.gather(stream(), *(join_later(box) for box in outboxes))
    for box in outboxes:
        assert await received(box, 150) == list(range(1, 151))


async def test_frames_published_together_reach_a_watcher_in_one_direct_write(
    hub_job: tuple[Hub, Job],
) -> None:
    """A message of several frames (``Journal.append_many``, one per line) is offered to each
    watcher's outbox together; a watcher that has seen one of them gets only the rest."""
    hub, job = hub_job

    def frame(seq: int) -> bytes:
        progress = ProgressFrame(
            job_id=JOB, seq=seq, epoch=EPOCH, progress=0.0, bytes_done=0, bytes_total=0,
            files_done=0, files_total=1,
        )  # fmt: skip
        return encoder.encode(progress)

    writes: dict[str, list[list[int]]] = {"fresh": [], "resumed": []}

    def recorder(name: str) -> Callable[[Sequence[Outgoing]], bool]:
        def deliver_now(items: Sequence[Outgoing]) -> bool:
            writes[name].append([i.seq for i in items])
            return True

        return deliver_now

    for name, since, job_seq in (("fresh", None, 0), ("resumed", Since(EPOCH, 1), 1)):
        outbox = Outbox(limit=10)
        outbox.direct = recorder(name)
        outbox.start_writer = lambda: None
        job.seq = job_seq  # what the snapshot says
        await hub.watch(JOB, since, outbox)
    hub.deliver(JOB, frame(1) + b"\n" + frame(2))
    hub.deliver(JOB, frame(3))
    # fresh: its snapshot (seq 0), then both frames in one write; resumed at 1: frame 2 only
    assert writes == {"fresh": [[0], [1, 2], [3]], "resumed": [[2], [3]]}


async def test_frames_this_replica_never_heard_reach_its_watcher_at_the_next_audit(
    hub_job: tuple[Hub, Job],
) -> None:
    """Frames published where this replica was not listening (pub/sub lost them, or they
    went to a primary a failover then demoted) reach the watcher from history once the job
    was silent for an audit period, as themselves."""
    hub, job = hub_job
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box)
    await job.emit()
    assert await received(box, 1) == [1]
    job.deaf = True
    await job.emit_two()
    job.deaf = False
    await hub.audit()  # the channel heard frame 1 since it was made: not silent yet
    await asyncio.sleep(0.05)
    assert len(box) == 0
    await hub.audit()
    assert await received_items(box, 2) == [(2, "progress"), (3, "progress")]


async def test_a_job_that_keeps_sending_frames_is_not_read_again(
    hub_job: tuple[Hub, Job],
) -> None:
    """The audit costs a store read only for a job that was silent a whole period; one that
    is up to date sends its watcher nothing more."""
    hub, job = hub_job
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box)
    reads = job.reads
    for _ in range(3):
        await hub.audit()
        await job.emit()
    assert job.reads == reads
    assert await received(box, 3) == [1, 2, 3]
    await hub.audit()  # frame 3 came in since the last audit
    await hub.audit()  # silent a period: read, and nothing is missing
    assert job.reads == reads + 1
    await asyncio.sleep(0.05)
    assert len(box) == 0


async def test_a_job_the_store_lost_ends_its_watchers_at_the_next_audit(
    hub_job: tuple[Hub, Job],
) -> None:
    """The store lost the job without this replica's connections noticing (no reconnect, so
    no resync): the audit finds it gone, ``on_lost`` writes its end, and the watcher gets
    that end rather than waiting forever."""
    hub, job = hub_job
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box, owner="alice")
    await job.emit()
    assert await received(box, 1) == [1]
    job.gone = True
    await hub.audit()
    await hub.audit()
    assert job.lost == [(JOB, "alice")]
    async with asyncio.timeout(5):
        end = await box.get()
    assert end is not None
    assert (end.type, end.epoch, end.terminal) == ("snapshot", "e2", True)


async def test_a_watcher_resuming_at_the_end_of_an_ended_job_hears_the_end_again(
    hub_job: tuple[Hub, Job],
) -> None:
    """A client that resumes from the job's terminal seq has every frame, but it must hear
    that nothing more will come (its socket or stream then ends) instead of waiting forever:
    it gets the ended job's snapshot, once."""
    hub, job = hub_job
    for _ in range(3):
        await job.emit()
    job.status = JobStatus.COMPLETED
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 3), box)
    async with asyncio.timeout(5):
        end = await box.get()
    assert end is not None
    assert (end.seq, end.type, end.terminal) == (3, "snapshot", True)
    assert '"recovered":true' in end.text
    await asyncio.sleep(0.05)
    assert len(box) == 0


async def test_a_watch_that_cannot_be_brought_up_to_date_is_closed_for_its_client_to_resume(
    hub_job: tuple[Hub, Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store lost the job and its end cannot be written: rather than hold the watcher's
    frames forever, the hub closes its connection (as a slow consumer's) after a few tries,
    so the client resumes and hears what the store says then."""
    monkeypatch.setattr(hub_module, "MOVE_TRIES", 2)
    hub, job = hub_job
    box = Outbox(limit=64)
    await hub.watch(JOB, Since(EPOCH, 0), box, owner="alice")
    job.gone = job.stays_lost = True
    await hub.audit()
    await hub.audit()
    async with asyncio.timeout(10):
        assert await box.get() is None  # the connection's writer stops and closes it
    assert box.overflowed

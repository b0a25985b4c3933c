"""The Journal contract (guarded writes, seq, record saved at that seq, history, fan-out),
run on the in-process backends and on a real redis-server, where every write is one script."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from delineate.broker.base import Broker
from delineate.broker.memory import MemoryBroker
from delineate.broker.redis import RedisBroker
from delineate.broker.redis_sharded import ShardedRedisBroker
from delineate.jobs import emitter, state
from delineate.jobstore.base import JobStore
from delineate.jobstore.memory import MemoryJobStore
from delineate.jobstore.redis import RedisJobStore
from delineate.journal.base import BuildFrame, Journal, Superseded, WriteMode
from delineate.journal.fencing import Fenced, JobEnded, JobLost, StatusMoved
from delineate.journal.redis import RedisJournal
from delineate.record import JobRecord, new_attempt
from delineate.redis.client import close_client, redis_client
from delineate.settings import Settings
from delineate_protocol.frames import (
    CancelledFrame,
    CompletedFrame,
    FailedFrame,
    JobError,
    JobStatus,
    StatusFrame,
)
from tests.server.broker.test_brokers import Recorder
from tests.support.services import RedisServer


@pytest.fixture(params=["memory", "redis", "cluster"])
async def journal(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Journal, Recorder]]:
    recorder = Recorder()
    client = None
    broker: Broker
    store: JobStore
    if request.param == "memory":
        broker = MemoryBroker(history_max_frames=64, retention_s=60)
        store = MemoryJobStore(retention_s=60)
        journal = Journal(broker, store)
    else:
        if request.param == "cluster":
            client = redis_client(Settings(redis_url=request.getfixturevalue("redis_cluster_url")))
            broker = ShardedRedisBroker(client, history_max_frames=64, retention_s=60)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            client = aioredis.Redis.from_url(server.url)
            broker = RedisBroker(client, history_max_frames=64, retention_s=60)
        store = RedisJobStore(client, retention_s=60, lease_ms=30_000)
        journal = RedisJournal(client, broker, store, history_max_frames=64, retention_s=60)
    await store.start()
    await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
    yield journal, recorder
    await journal.aclose()
    await broker.stop()
    await store.stop()
    if client is not None:
        await close_client(client)


async def running_job(journal: Journal, quota: str | None = None) -> JobRecord:
    """A stored job that a worker has started (its status frame written as a claim)."""
    job_id = str(uuid.uuid4())
    record = JobRecord(job=state.new_job(job_id, [70000]), quota=quota)
    await journal.store.create(record, None)
    await journal.broker.subscribe(job_id)
    state.transition(record.job, JobStatus.PROCESSING)
    record.fence += 1
    record.attempt = new_attempt()
    await journal.append(
        record, status_frame(record), mode=WriteMode.CLAIM, expect=JobStatus.QUEUED
    )
    return record


def status_frame(record: JobRecord) -> BuildFrame:
    job = record.job
    return lambda j, s: StatusFrame(job_id=j, seq=s, status=job.status, attempt=job.attempt)


def progress_frame(record: JobRecord) -> BuildFrame:
    return emitter.progress_frame(record.job)


def completed_frame() -> BuildFrame:
    return lambda jid, s: CompletedFrame(
        job_id=jid, seq=s, download_url="u", expires_at="t", size=1, files_included=1
    )


def cancelled_frame() -> BuildFrame:
    return lambda jid, s: CancelledFrame(job_id=jid, seq=s)


def seqs(recorder: Recorder, job_id: str) -> list[int]:
    return [
        json.loads(line)["seq"]
        for j, p in recorder.frames
        if j == job_id
        for line in p.split(b"\n")
    ]


async def test_frames_get_consecutive_seqs_and_the_record_follows(
    journal: tuple[Journal, Recorder],
) -> None:
    j, recorder = journal
    record = await running_job(j)
    job_id = record.job.job_id
    for step in range(1, 6):
        record.job.progress = step * 10.0
        frame = await j.append(record, progress_frame(record))
        assert frame.seq == record.job.seq == step + 1
        assert frame.epoch == record.job.epoch != ""
    await recorder.wait(lambda: len(seqs(recorder, job_id)) == 6)
    assert seqs(recorder, job_id) == [1, 2, 3, 4, 5, 6]
    stored = await j.store.get(job_id)
    assert stored is not None
    assert (stored.job.seq, stored.job.progress) == (6, 50.0)
    history = await j.broker.history(job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3, 4, 5, 6]
    assert [json.loads(p)["progress"] for _, p in history.frames[1:]] == [10, 20, 30, 40, 50]
    if isinstance(j, RedisJournal):
        assert j.retries == 0  # every frame went through the script at once


async def test_a_stale_attempt_is_fenced_off(journal: tuple[Journal, Recorder]) -> None:
    """A worker that lost the job to another attempt (its lease lapsed) is refused at its
    next write, and nothing of it reaches the record, the history or the watchers. The
    takeover writes in a new epoch, after the stored seq: the stale attempt may have
    published frames at the next seqs that a failover took from the store."""
    j, _ = journal
    record = await running_job(j)
    job_id = record.job.job_id
    stale = copy.deepcopy(record)
    taken = copy.deepcopy(record)
    state.transition(taken.job, JobStatus.QUEUED)
    state.transition(taken.job, JobStatus.PROCESSING)
    taken.fence += 1
    await j.append(taken, status_frame(taken), mode=WriteMode.CLAIM, expect=JobStatus.PROCESSING)
    with pytest.raises(Fenced):
        await j.append(stale, progress_frame(stale))
    state.transition(stale.job, JobStatus.COMPLETED)
    with pytest.raises(Fenced):
        await j.append(stale, completed_frame())
    # a second claim of the same attempt loses too: one attempt per fence
    with pytest.raises(Fenced):
        await j.append(stale, status_frame(stale), mode=WriteMode.CLAIM)
    stored = await j.store.get(job_id)
    assert stored is not None
    assert (stored.job.status, stored.fence, stored.job.seq) == (JobStatus.PROCESSING, 2, 2)
    assert stored.job.epoch == taken.job.epoch != record.job.epoch
    history = await j.broker.history(job_id, 0)
    assert [seq for seq, _ in history.frames] == [2]
    assert {json.loads(frame)["epoch"] for _, frame in history.frames} == {taken.job.epoch}


async def test_an_attempt_whose_claim_a_failover_dropped_is_fenced_off_by_its_token(
    journal: tuple[Journal, Recorder],
) -> None:
    """The store lost a claim (it says queued, fence 0, again), so another worker claims
    fence 1 anew: the first attempt holds fence 1 too, and only its token tells them apart."""
    j, _ = journal
    job_id = str(uuid.uuid4())
    queued = JobRecord(job=state.new_job(job_id, [70000]))
    await j.store.create(queued, None)

    def claimant() -> JobRecord:
        record = copy.deepcopy(queued)
        state.transition(record.job, JobStatus.PROCESSING)
        record.fence, record.attempt = 1, new_attempt()
        return record

    first, second = claimant(), claimant()
    await j.append(first, status_frame(first), mode=WriteMode.CLAIM, expect=JobStatus.QUEUED)
    await j.store.save(copy.deepcopy(queued))  # the failover: back to what the replica had
    await j.append(second, status_frame(second), mode=WriteMode.CLAIM, expect=JobStatus.QUEUED)
    with pytest.raises(Fenced):
        await j.append(first, progress_frame(first))
    await j.append(second, progress_frame(second))
    stored = await j.store.get(job_id)
    assert stored is not None
    assert (stored.fence, stored.attempt, stored.job.seq) == (1, second.attempt, 2)


async def test_a_terminal_state_is_final_whoever_writes(journal: tuple[Journal, Recorder]) -> None:
    """Once a job ended, no write changes it: not its worker's, not a cancel's."""
    j, _ = journal
    record = await running_job(j)
    canceller = copy.deepcopy(record)
    state.transition(record.job, JobStatus.COMPLETED)
    await j.append(record, completed_frame())
    state.transition(canceller.job, JobStatus.CANCELLED)
    with pytest.raises(JobEnded) as ended:
        await j.append(canceller, cancelled_frame(), mode=WriteMode.ANY)
    assert ended.value.status is JobStatus.COMPLETED
    with pytest.raises(JobEnded):
        await j.append(record, completed_frame())
    history = await j.broker.history(record.job.job_id, 0)
    assert [json.loads(p)["type"] for _, p in history.frames] == ["status", "completed"]


async def test_a_cancel_that_wins_refuses_the_completion(journal: tuple[Journal, Recorder]) -> None:
    """Cancel and completion race: whichever is written first is the outcome."""
    j, _ = journal
    record = await running_job(j)
    canceller = copy.deepcopy(record)
    await j.append(record, progress_frame(record))
    state.transition(canceller.job, JobStatus.CANCELLED)
    await j.append(canceller, cancelled_frame(), mode=WriteMode.ANY)  # after the worker's seq 2
    state.transition(record.job, JobStatus.COMPLETED)
    with pytest.raises(JobEnded) as ended:
        await j.append(record, completed_frame())
    assert ended.value.status is JobStatus.CANCELLED
    stored = await j.store.get(record.job.job_id)
    assert stored is not None
    assert (stored.job.status, stored.job.seq) == (JobStatus.CANCELLED, 3)


async def test_expect_refuses_a_job_that_moved_on(journal: tuple[Journal, Recorder]) -> None:
    j, _ = journal
    record = await running_job(j)
    state.transition(record.job, JobStatus.CANCELLED)
    with pytest.raises(StatusMoved):
        await j.append(record, status_frame(record), mode=WriteMode.ANY, expect=JobStatus.QUEUED)


async def test_a_write_to_a_job_the_store_lost_is_refused_and_a_tombstone_is_written_once(
    journal: tuple[Journal, Recorder],
) -> None:
    """A job whose record is gone: a worker's write is refused (JobLost); its tombstone
    (failed, job_lost) is written in a new epoch, and only while the record is still gone."""
    j, _ = journal
    ghost = JobRecord(job=state.new_job(str(uuid.uuid4()), [70000]))
    ghost.job.seq, ghost.fence = 7, 1
    with pytest.raises(JobLost):
        await j.append(ghost, progress_frame(ghost))
    error = JobError(code="job_lost", message="gone")
    old_epoch = ghost.job.epoch
    state.mark_lost(ghost.job, error)
    frame = await j.append(
        ghost, lambda jid, s: FailedFrame(job_id=jid, seq=s, error=error), mode=WriteMode.LOST
    )
    assert frame.epoch != old_epoch
    stored = await j.store.get(ghost.job.job_id)
    assert stored is not None
    assert (stored.job.status, stored.job.epoch) == (JobStatus.FAILED, frame.epoch)
    with pytest.raises(Superseded):  # a second tombstone writer finds it there
        await j.append(
            ghost, lambda jid, s: FailedFrame(job_id=jid, seq=s, error=error), mode=WriteMode.LOST
        )


async def test_a_store_behind_the_writer_moves_the_job_to_a_new_epoch(
    journal: tuple[Journal, Recorder],
) -> None:
    """The store lost the last writes (a failover, a restart from an older snapshot): the
    writer's frames go on counting in a new epoch, with the old epoch's history dropped, so
    no watcher takes them for frames it has seen."""
    j, _ = journal
    record = await running_job(j)
    behind = copy.deepcopy(record)
    for _ in range(3):
        await j.append(record, progress_frame(record))
    await j.store.save(behind)  # the store now says seq 1, as if 2-4 were lost
    old_epoch = record.job.epoch
    frame = await j.append(record, progress_frame(record))
    assert (frame.seq, record.job.seq) == (5, 5)
    assert frame.epoch == record.job.epoch != old_epoch
    stored = await j.store.get(record.job.job_id)
    assert stored is not None
    assert (stored.job.epoch, stored.job.seq) == (frame.epoch, 5)
    history = await j.broker.history(record.job.job_id, 0)
    if isinstance(j, RedisJournal):
        assert [seq for seq, _ in history.frames] == [5]


async def test_a_terminal_frame_gives_the_active_job_slot_back(
    journal: tuple[Journal, Recorder],
) -> None:
    j, _ = journal
    assert await j.store.claim_slot("owner-1", "placeholder", limit=1)
    await j.store.release_slot("owner-1", "placeholder")
    record = await running_job(j, quota="owner-1")
    assert await j.store.claim_slot("owner-1", record.job.job_id, limit=1)
    assert not await j.store.claim_slot("owner-1", "another", limit=1)
    state.transition(record.job, JobStatus.COMPLETED)
    frame = await j.append(record, completed_frame())
    assert frame.seq == 2
    assert await j.store.claim_slot("owner-1", "another", limit=1)
    history = await j.broker.history(record.job.job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2]
    stored = await j.store.get(record.job.job_id)
    assert stored is not None
    assert (stored.job.status, stored.job.seq) == (JobStatus.COMPLETED, 2)


async def test_frames_made_together_get_consecutive_seqs_and_go_out_as_one_message(
    journal: tuple[Journal, Recorder],
) -> None:
    """``append_many``: the record is saved at the last seq, each frame is in the history,
    and one message carries them (a line each), which a replica delivers together."""
    j, recorder = journal
    record = await running_job(j, quota="owner-2")
    job_id = record.job.job_id
    assert await j.store.claim_slot("owner-2", job_id, limit=1)
    state.transition(record.job, JobStatus.COMPLETED)
    frames = await j.append_many(record, [progress_frame(record), completed_frame()])
    assert [f.seq for f in frames] == [2, 3]
    assert record.job.seq == 3
    history = await j.broker.history(job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3]
    assert [json.loads(p)["type"] for _, p in history.frames] == ["status", "progress", "completed"]
    stored = await j.store.get(job_id)
    assert stored is not None
    assert (stored.job.status, stored.job.seq) == (JobStatus.COMPLETED, 3)
    assert await j.store.claim_slot("owner-2", "another", limit=1)  # the slot came back

    def published() -> list[list[int]]:
        messages = [p for jid, p in recorder.frames if jid == job_id]
        return [[json.loads(line)["seq"] for line in m.split(b"\n")] for m in messages]

    await recorder.wait(lambda: sum(map(len, published())) == 3)
    assert published() == [[1], [2, 3]]


async def test_a_cancel_after_the_workers_frames_goes_after_them(
    journal: tuple[Journal, Recorder],
) -> None:
    """A cancel built from an older read of the job takes the next seq, not an old one."""
    j, _ = journal
    record = await running_job(j)
    canceller = copy.deepcopy(record)
    for _ in range(2):
        await j.append(record, progress_frame(record))
    state.transition(canceller.job, JobStatus.CANCELLED)
    frame = await j.append(canceller, cancelled_frame(), mode=WriteMode.ANY)
    assert frame.seq == 4
    history = await j.broker.history(record.job.job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3, 4]
    if isinstance(j, RedisJournal):
        assert j.retries == 1  # the script found the worker's frames and went after them

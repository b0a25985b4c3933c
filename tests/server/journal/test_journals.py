"""The Journal contract (seq, record saved at that seq, history, fan-out), run on the
in-process backends and on a real redis-server, where progress frames take one script."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server.broker.base import Broker
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.frames import CompletedFrame, JobStatus, StatusFrame
from server.jobs import emitter, state
from server.jobs.state import JobRecord
from server.jobstore.base import JobStore
from server.jobstore.memory import MemoryJobStore
from server.jobstore.redis import RedisJobStore
from server.journal.base import BuildFrame, Journal, Superseded
from server.journal.redis import RedisJournal
from tests.server.broker.test_brokers import Recorder
from tests.support.services import RedisServer


@pytest.fixture(params=["memory", "redis"])
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
        await client.aclose()


async def running_job(journal: Journal, quota: str | None = None) -> JobRecord:
    """A stored job that a worker has started (its status frame written, expect=QUEUED)."""
    job_id = str(uuid.uuid4())
    record = JobRecord(job=state.new_job(job_id, [70000]), quota=quota)
    await journal.store.create(record, None)
    await journal.broker.subscribe(job_id)
    state.transition(record.job, JobStatus.PROCESSING)
    await journal.append(record, status_frame(record), expect=JobStatus.QUEUED)
    return record


def status_frame(record: JobRecord) -> BuildFrame:
    job = record.job
    return lambda j, s: StatusFrame(job_id=j, seq=s, status=job.status, attempt=job.attempt)


def progress_frame(record: JobRecord) -> BuildFrame:
    return emitter.progress_frame(record.job)


def seqs(recorder: Recorder, job_id: str) -> list[int]:
    return [json.loads(p)["seq"] for j, p in recorder.frames if j == job_id]


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
    await recorder.wait(lambda: len(seqs(recorder, job_id)) == 6)
    assert seqs(recorder, job_id) == [1, 2, 3, 4, 5, 6]
    stored = await j.store.get(job_id)
    assert stored is not None
    assert (stored.job.seq, stored.job.progress) == (6, 50.0)
    history = await j.broker.history(job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3, 4, 5, 6]
    assert [json.loads(p)["progress"] for _, p in history.frames[1:]] == [10, 20, 30, 40, 50]
    if isinstance(j, RedisJournal):
        assert j.fallbacks == 0  # every progress frame went through the script


async def test_a_frame_written_by_someone_else_in_between_is_neither_overwritten_nor_repeated(
    journal: tuple[Journal, Recorder],
) -> None:
    """Two writers of one job (a worker and a stale copy elsewhere): every frame gets its own
    seq, in order, with no gap."""
    j, recorder = journal
    record = await running_job(j)
    job_id = record.job.job_id
    other = copy.deepcopy(record)
    await j.append(record, progress_frame(record))  # seq 2
    other.job.progress = 99.0
    await j.append(other, progress_frame(other))  # the stale copy thinks seq 2 is next
    await j.append(record, progress_frame(record))
    history = await j.broker.history(job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3, 4]
    assert json.loads(history.frames[2][1])["progress"] == 99.0
    await recorder.wait(lambda: len(seqs(recorder, job_id)) == 4)
    assert seqs(recorder, job_id) == [1, 2, 3, 4]
    if isinstance(j, RedisJournal):
        assert j.fallbacks == 2  # both writers found the counter moved once


async def test_expect_refuses_a_job_that_moved_on(journal: tuple[Journal, Recorder]) -> None:
    j, _ = journal
    record = await running_job(j)
    state.transition(record.job, JobStatus.CANCELLED)
    with pytest.raises(Superseded):
        await j.append(record, status_frame(record), expect=JobStatus.QUEUED)


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
    frame = await j.append(
        record,
        lambda jid, s: CompletedFrame(
            job_id=jid, seq=s, download_url="u", expires_at="t", size=1, files_included=1
        ),
    )
    assert frame.seq == 2
    assert await j.store.claim_slot("owner-1", "another", limit=1)
    history = await j.broker.history(record.job.job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2]
    stored = await j.store.get(record.job.job_id)
    assert stored is not None
    assert (stored.job.status, stored.job.seq) == (JobStatus.COMPLETED, 2)
    if isinstance(j, RedisJournal):
        assert j.scripted == 1  # the terminal frame and the slot's release: one script


async def test_frames_made_together_get_consecutive_seqs_and_go_out_as_one_message(
    journal: tuple[Journal, Recorder],
) -> None:
    """``append_many``: the record is saved at the last seq, each frame is in the history;
    through Redis one script writes them and one message carries them (a line each), which
    a replica delivers together."""
    j, recorder = journal
    record = await running_job(j, quota="owner-2")
    job_id = record.job.job_id
    assert await j.store.claim_slot("owner-2", job_id, limit=1)
    state.transition(record.job, JobStatus.COMPLETED)
    frames = await j.append_many(
        record,
        [
            progress_frame(record),
            lambda jid, s: CompletedFrame(
                job_id=jid, seq=s, download_url="u", expires_at="t", size=1, files_included=1
            ),
        ],
    )
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
    if isinstance(j, RedisJournal):
        assert published() == [[1], [2, 3]]
        assert (j.scripted, j.fallbacks) == (2, 0)
    else:
        assert published() == [[1], [2], [3]]


async def test_frames_made_together_after_another_writer_still_get_their_own_seqs(
    journal: tuple[Journal, Recorder],
) -> None:
    j, _ = journal
    record = await running_job(j)
    other = copy.deepcopy(record)
    await j.append(other, progress_frame(other))  # seq 2, unknown to ``record``
    frames = await j.append_many(record, [progress_frame(record), progress_frame(record)])
    assert [f.seq for f in frames] == [3, 4]
    history = await j.broker.history(record.job.job_id, 0)
    assert [seq for seq, _ in history.frames] == [1, 2, 3, 4]
    if isinstance(j, RedisJournal):
        assert j.fallbacks == 1  # the script found the counter moved; the base path wrote both

"""The per-connection outbox: progress coalesces, other frames are never dropped."""

import asyncio

from server.realtime.outbox import Outbox, Outgoing


def item(seq: int, type: str = "progress", job: str = "a") -> Outgoing:
    return Outgoing(job, seq, type, f"{job}{seq}")


def drain(box: Outbox) -> list[tuple[str, int]]:
    out = []
    while len(box):
        got = asyncio.run(box.get())
        assert got is not None
        out.append((got.job_id, got.seq))
    return out


def test_full_outbox_replaces_oldest_progress_of_the_same_job() -> None:
    """Seq stays increasing: the older progress frame leaves, the new one goes to the back."""
    box = Outbox(limit=3)
    for i, t in [(1, "progress"), (2, "file"), (3, "progress")]:
        box.put(item(i, t))
    box.put(item(4))
    assert drain(box) == [("a", 2), ("a", 3), ("a", 4)]
    assert box.coalesced == 1
    assert not box.overflowed


def test_progress_of_another_job_is_not_replaced() -> None:
    """Coalescing is per job; with nothing of its own to replace, a progress frame is dropped."""
    box = Outbox(limit=2)
    box.put(item(1, job="a"))
    box.put(item(1, "file", job="a"))
    box.put(item(2, job="b"))
    assert drain(box) == [("a", 1), ("a", 1)]
    assert box.coalesced == 1


def test_non_progress_frame_on_a_full_outbox_overflows() -> None:
    """A file or terminal frame is never dropped: the connection must close instead."""
    box = Outbox(limit=2)
    box.put(item(1, "file"))
    box.put(item(2, "file"))
    box.put(item(3, "completed"))
    assert box.overflowed
    assert asyncio.run(box.get()) is None


async def test_get_waits_for_put() -> None:
    """A reader blocks until something is queued."""
    box = Outbox(limit=4)
    reader = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    assert not reader.done()
    box.put(item(1))
    got = await asyncio.wait_for(reader, 1)
    assert got is not None
    assert got.seq == 1

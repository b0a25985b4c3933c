"""The per-connection outbox: progress coalesces, other frames are never dropped."""

import asyncio
from collections.abc import Sequence

from delineate.realtime.outbox import Outbox, Outgoing


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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_non_progress_frames_queue_beyond_the_limit_up_to_the_hard_limit() -> None:
    """A file or terminal frame is never dropped; past the hard limit the connection closes."""
    box = Outbox(limit=2, clock=Clock())
    for seq in range(1, box.hard_limit + 1):
        box.put(item(seq, "file"))
    assert not box.overflowed
    assert len(box) == box.hard_limit == 8
    box.put(item(99, "completed"))
    assert box.overflowed
    assert asyncio.run(box.get()) is None


def test_an_outbox_full_past_the_deadline_overflows_and_tells_its_connection() -> None:
    """Full for longer than the deadline: the writer is stuck on a client that stopped
    reading, so the connection is told to close (and frees the queue at once)."""
    clock = Clock()
    fired = []
    box = Outbox(limit=2, deadline_s=5, clock=clock)
    box.on_overflow = lambda: fired.append(True)
    box.put(item(1, "file"))
    box.put(item(2, "file"))
    box.put(item(3))  # full from now on
    clock.now += 5
    box.put(item(4))
    assert not box.overflowed, "exactly at the deadline is still in time"
    assert not box.expired()
    clock.now += 0.1
    assert box.expired()
    box.put(item(5))
    assert box.overflowed
    assert fired == [True]
    assert len(box) == 0


def test_a_reader_that_catches_up_resets_the_deadline() -> None:
    clock = Clock()
    box = Outbox(limit=2, deadline_s=5, clock=clock)
    box.put(item(1, "file"))
    box.put(item(2, "file"))
    box.put(item(3, "file"))  # full since 100
    clock.now += 4
    drain(box)  # the client read everything
    assert box.full_since is None
    box.put(item(4, "file"))
    box.put(item(5, "file"))
    box.put(item(6, "file"))  # full again, since 104
    clock.now += 4
    box.put(item(7, "file"))
    assert not box.overflowed


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


async def test_direct_delivery_only_while_the_writer_waits_on_an_empty_outbox() -> None:
    """Order is kept: a message skips the queue only when nothing is queued and the writer is
    parked; a refused direct write (False) is queued as usual."""
    box = Outbox(limit=10)
    direct: list[int] = []
    accept = True

    def deliver_now(messages: Sequence[Outgoing]) -> bool:
        if accept:
            direct.extend(m.seq for m in messages)
        return accept

    box.direct = deliver_now
    box.put(item(1))  # no writer waiting yet: queued
    first = await box.get()
    assert first is not None
    assert first.seq == 1
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    box.put(item(2))  # writer parked, outbox empty: written directly
    assert direct == [2]
    assert len(box) == 0
    assert not waiting.done()
    accept = False
    box.put(item(3))  # refused: queued, and the writer wakes for it
    woken = await asyncio.wait_for(waiting, 1)
    assert woken is not None
    assert woken.seq == 3
    accept = True
    box.put(item(4))  # nobody waits now: queued behind anything else
    box.put(item(5))
    assert direct == [2]
    assert [(await box.get()).seq, (await box.get()).seq] == [4, 5]  # type: ignore[union-attr]


def test_a_connection_without_a_writer_writes_directly_until_a_message_must_wait() -> None:
    """With ``start_writer`` set (no writer task yet) messages go out directly; the first
    one that cannot starts the writer, once, and waits in the queue for it."""
    box = Outbox(limit=10)
    direct: list[int] = []
    started: list[bool] = []

    def deliver_now(messages: Sequence[Outgoing]) -> bool:
        if any(m.type == "completed" for m in messages):
            return False
        direct.extend(m.seq for m in messages)
        return True

    box.direct = deliver_now
    box.start_writer = lambda: started.append(True)
    box.put(item(1))
    box.put(item(2))
    assert direct == [1, 2]
    assert started == []
    box.put(item(3, "completed"))
    assert started == [True]
    assert box.start_writer is None
    box.put(item(4))  # behind the queued message, whatever the direct path would say
    box.put(item(5, "completed"))
    assert started == [True]
    assert direct == [1, 2]
    assert drain(box) == [("a", 3), ("a", 4), ("a", 5)]


def test_messages_put_together_go_out_in_one_direct_call_or_queue_in_order() -> None:
    """``put_many`` (frames a job published at once): one direct call with all of them while
    the connection is idle; refused, they are queued in order and one writer starts."""
    box = Outbox(limit=10)
    calls: list[list[int]] = []
    accept = True
    started: list[bool] = []

    def deliver_now(messages: Sequence[Outgoing]) -> bool:
        if accept:
            calls.append([m.seq for m in messages])
        return accept

    box.direct = deliver_now
    box.start_writer = lambda: started.append(True)
    box.put_many([item(1, "file"), item(2, "completed")])
    assert calls == [[1, 2]]
    assert len(box) == 0
    accept = False
    box.put_many([item(3, "file"), item(4, "completed")])
    assert calls == [[1, 2]]
    assert started == [True]
    assert [box.pop().seq, box.pop().seq] == [3, 4]  # type: ignore[union-attr]
    box.put_many([])  # nothing to send: nothing happens
    assert (len(box), calls) == (0, [[1, 2]])

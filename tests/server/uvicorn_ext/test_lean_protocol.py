"""``Inbox`` and ``Flag``: the lighter stand-ins for uvicorn's per-connection Queue and Event."""

from __future__ import annotations

import asyncio

from delineate.uvicorn_ext.sockets import Flag, Inbox


async def test_inbox_is_first_in_first_out_and_get_waits_for_put() -> None:
    inbox: Inbox[int] = Inbox()
    assert inbox.empty()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await asyncio.wait_for(reader, 1) == 1
    assert not inbox.empty()
    assert await inbox.get() == 2
    assert inbox.empty()


async def test_a_reader_cancelled_after_its_wake_up_passes_the_message_on() -> None:
    """As with asyncio.Queue: a message is never stranded by a cancelled reader."""
    inbox: Inbox[str] = Inbox()
    first = asyncio.ensure_future(inbox.get())
    second = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("message")  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "message"
    assert first.cancelled()


async def test_a_cancelled_reader_leaves_no_waiter_behind() -> None:
    inbox: Inbox[int] = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.wait([reader])
    inbox.put_nowait(7)
    assert await asyncio.wait_for(inbox.get(), 1) == 7


async def test_flag_starts_set_and_wakes_every_waiter_when_set_again() -> None:
    flag = Flag()
    assert flag.is_set()
    assert await flag.wait() is True  # set: no waiting
    flag.clear()
    assert not flag.is_set()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert flag.is_set()

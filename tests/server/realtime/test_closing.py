"""The close pacer: order, the budget per tick, a late tick, turns, flush and failures.

Ticks are told apart by the closes themselves (each tick's closes run in one callback, and
a ``call_soon`` from the first one runs after the last), and lateness by a clock the test
moves, so nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from delineate.realtime.closing import TICK_S, ClosePacer


class Ticks:
    """Records which closes ran in which tick; ``after_tick`` runs between ticks."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self._open = False
        self.after_tick: Callable[[int], None] = lambda n: None

    def close(self, n: int) -> Callable[[], None]:
        def run() -> None:
            if not self._open:
                self._open = True
                self.batches.append([])
                asyncio.get_running_loop().call_soon(self._end)
            self.batches[-1].append(n)

        return run

    def _end(self) -> None:
        self._open = False
        self.after_tick(len(self.batches))

    def ran(self) -> list[int]:
        return [n for batch in self.batches for n in batch]


async def settle(pacer: ClosePacer) -> None:
    for _ in range(1000):
        if not len(pacer):
            return
        await asyncio.sleep(TICK_S)
    raise AssertionError("the queued closes never ran")


async def test_closes_run_in_order_at_most_per_tick_and_one_in_a_late_tick() -> None:
    now = [0.0]
    pacer = ClosePacer(rate=3 / TICK_S, clock=lambda: now[0])
    ticks = Ticks()
    # The second tick comes late (the loop was busy): it runs one close only.
    ticks.after_tick = lambda n: now.__setitem__(0, now[0] + (1.0 if n == 1 else 0.0))
    for n in range(8):
        pacer.schedule(ticks.close(n))
    assert ticks.batches == []  # queued: the first tick runs in the loop's next turn
    await settle(pacer)
    assert ticks.batches == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert pacer.paced == 7  # every close but the first found one waiting


async def test_a_close_queued_while_none_wait_runs_in_the_next_turn() -> None:
    pacer = ClosePacer(rate=100)
    ran: list[str] = []
    pacer.schedule(lambda: ran.append("one"))
    await asyncio.sleep(0)
    assert ran == ["one"]
    assert (len(pacer), pacer.paced) == (0, 0)
    pacer.schedule(lambda: ran.append("two"))  # the queue emptied: no waiting either
    await asyncio.sleep(0)
    assert ran == ["one", "two"]
    assert pacer.paced == 0


async def test_rate_zero_closes_at_once() -> None:
    pacer = ClosePacer(rate=0)
    ran: list[int] = []
    pacer.schedule(lambda: ran.append(1))
    assert ran == [1]
    await pacer.turn()  # returns without waiting for any tick
    assert len(pacer) == 0


async def test_turns_come_in_order_and_a_cancelled_waiter_is_skipped() -> None:
    pacer = ClosePacer(rate=1 / TICK_S)  # one close per tick
    order: list[str] = []

    async def waiter(name: str) -> None:
        await pacer.turn()
        order.append(name)

    first = asyncio.ensure_future(waiter("first"))
    gone = asyncio.ensure_future(waiter("gone"))
    last = asyncio.ensure_future(waiter("last"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(first, last)
    assert order == ["first", "last"]
    assert gone.cancelled()


async def test_flush_runs_everything_queued_at_once_and_stops_ticking() -> None:
    pacer = ClosePacer(rate=1 / TICK_S)
    ticks = Ticks()
    for n in range(5):
        pacer.schedule(ticks.close(n))
    pacer.flush()
    assert ticks.ran() == [0, 1, 2, 3, 4]
    assert len(pacer) == 0
    await asyncio.sleep(3 * TICK_S)  # no tick left behind runs anything again
    assert ticks.ran() == [0, 1, 2, 3, 4]


async def test_a_failing_close_does_not_stall_the_others() -> None:
    pacer = ClosePacer(rate=1 / TICK_S)
    ran: list[int] = []

    def broken() -> None:
        raise RuntimeError("transport gone")

    pacer.schedule(broken)
    pacer.schedule(lambda: ran.append(2))
    await settle(pacer)
    assert ran == [2]


def test_a_rate_below_one_per_tick_spaces_the_ticks_out() -> None:
    assert (ClosePacer(rate=800).per_tick, ClosePacer(rate=800).interval_s) == (8, 0.01)
    slow = ClosePacer(rate=2)
    assert (slow.per_tick, slow.interval_s) == (1, 0.5)
    assert (ClosePacer(rate=0).per_tick, ClosePacer(rate=0).interval_s) == (0, 0.0)

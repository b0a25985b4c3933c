"""Closes that can wait: the streams a job's end closes, paced so frames go first.

When a job ends, every single-job socket and SSE stream that followed it gets the terminal
frame and is then closed. The terminal frame is what the client waits for; the close is
housekeeping. But a close costs several times a frame (the close frame, the client's
answer to read, both TCP teardowns and the session's own), so when many jobs end at once the
closes are most of the work of that moment, and every other job's frames would wait behind
them (docs/performance.md has the figures).

So a terminal frame goes out at once and the close queues here. A ``ClosePacer`` runs the
queued closes in ticks: a close queued while nothing waits runs in the event loop's next
turn (a lone job's end closes at once); while closes wait, ``per_tick`` of them run every
``interval_s`` (``TICK_S`` at the default rate), and only one in a tick that comes late,
since a late tick means the event loop is busy with work that matters more.

Closing never waits on the client: a client that closes first (the SDK does, on the
terminal frame) is closed by its own request, and its queued close finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK_S = 0.01
"""How often queued closes run while there are any, unless the rate is below one per tick."""


class ClosePacer:
    """Runs close callbacks in order, at most ``rate`` per second (0: each at once)."""

    def __init__(self, rate: float, clock: Callable[[], float] | None = None) -> None:
        """``clock``: what tells a late tick (the event loop's clock by default)."""
        self.per_tick = max(1, round(rate * TICK_S)) if rate > 0 else 0
        self.interval_s = self.per_tick / rate if rate > 0 else 0.0
        self._clock = clock
        self._queue: deque[Callable[[], object]] = deque()
        self._tick: asyncio.TimerHandle | asyncio.Handle | None = None
        self._due = 0.0
        self.paced = 0
        """Closes that had to wait for a later tick (a metric of how often pacing bites)."""

    def __len__(self) -> int:
        return len(self._queue)

    def schedule(self, close: Callable[[], object]) -> None:
        """Run ``close`` on its turn: at once when nothing is queued."""
        if not self.per_tick:
            close()
            return
        self._queue.append(close)
        if self._tick is None:
            self._due = self._now()
            self._tick = asyncio.get_running_loop().call_soon(self._run)
        else:
            self.paced += 1

    async def turn(self) -> None:
        """Wait for this caller's turn to close (the same queue as ``schedule``)."""
        if not self.per_tick:
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def arrived() -> None:
            if not turn.done():  # the waiter may have been cancelled meanwhile
                turn.set_result(None)

        self.schedule(arrived)
        await turn

    def flush(self) -> None:
        """Run every queued close now (shutdown: the connections end anyway)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        while self._queue:
            _call(self._queue.popleft())

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _run(self) -> None:
        late = self._now() - self._due > self.interval_s / 2
        queue = self._queue
        for _ in range(1 if late else self.per_tick):
            if not queue:
                break
            _call(queue.popleft())
        if queue:
            self._due = self._now() + self.interval_s
            self._tick = asyncio.get_running_loop().call_later(self.interval_s, self._run)
        else:
            self._tick = None


def _call(close: Callable[[], object]) -> None:
    try:
        close()
    except Exception:  # one connection's failure must not stall the others' closes
        log.exception("a paced close failed")

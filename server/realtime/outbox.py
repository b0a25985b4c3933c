"""A connection's bounded queue of outgoing messages, and its overflow policy.

Policy, in order, when the queue holds ``limit`` messages:
1. a new ``progress`` frame replaces the oldest queued ``progress`` frame of the same job
   (progress is a state, not a log: only the newest matters; seq stays increasing, with a
   gap where the older frame was);
2. a new ``progress`` frame with nothing to replace is dropped (the next one, or the
   terminal frame, carries the state anyway);
3. any other message (snapshot, file, terminal, control) is never dropped: the outbox is
   marked ``overflowed`` and the connection closes it with 1013 so the client resumes with
   ``since`` (the frames are in the job's history).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Outgoing:
    """One message for one connection; the same object is shared by every local watcher."""

    __slots__ = ("job_id", "seq", "terminal", "text", "ts", "type")

    def __init__(
        self,
        job_id: str,
        seq: int,
        type: str,
        text: str,
        terminal: bool = False,
        ts: float = 0.0,
    ) -> None:
        self.job_id, self.seq, self.type, self.text = job_id, seq, type, text
        self.terminal, self.ts = terminal, ts

    def __repr__(self) -> str:
        return f"Outgoing({self.job_id[:8]}, {self.seq}, {self.type})"


CONTROL_SEQ = -1
"""The seq given to control messages (acks, errors, pongs), which are not job frames."""


class Outbox:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self.limit and not self._make_room(item):
            if item.type == "progress":
                self.coalesced += 1
                return
            self.overflowed = True
        else:
            self._items.append(item)
        self._ready.set()

    def _make_room(self, item: Outgoing) -> bool:
        if item.type != "progress":
            return False
        for queued in self._items:
            if queued.type == "progress" and queued.job_id == item.job_id:
                self._items.remove(queued)
                self.coalesced += 1
                return True
        return False

    async def get(self) -> Outgoing | None:
        """The next message; None once the outbox overflowed (close the connection)."""
        while not self._items and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            return None
        return self._items.popleft()

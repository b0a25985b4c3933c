"""A connection's bounded queue of outgoing messages, and its overflow policy.

The outbox holds up to ``limit`` messages while the connection keeps up. When it is full
(the client reads slower than frames arrive):

1. a new ``progress`` frame replaces the queued ``progress`` frame of the same job (progress
   is a state, not a log: only the newest matters; seq stays increasing, with a gap where
   the older frame was);
2. a new ``progress`` frame with nothing to replace is dropped (the next one, or the
   terminal frame, carries the state anyway);
3. any other message (snapshot, file, terminal, control) is never dropped: it is queued
   beyond ``limit``, up to ``hard_limit``.

The outbox *overflows* when it has stayed full for ``deadline_s``, or reaches
``hard_limit``: nothing more is queued, ``on_overflow`` fires (the connection stops its
writer, which may be stuck in a send to a client that stopped reading) and the connection
closes with 1013 (an event stream ends), reset at CLOSE_DEADLINE_S if the client does not read
that either. The client resumes with ``since``: every frame is in the job's history.
A stalled client therefore costs at most ``hard_limit`` messages and never slows anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from delineate.realtime.resume import position
from delineate.settings import Settings
from delineate.wire import body_chunk, format_sse_event, text_frame


class Outgoing:
    """One message for one connection; the same object is shared by every local watcher."""

    __slots__ = (
        "_sse_chunk", "_sse_event", "_ws_frame", "epoch", "job_id", "seq", "terminal", "text", "ts",
        "type",
    )  # fmt: skip

    def __init__(
        self,
        job_id: str,
        seq: int,
        type: str,
        text: str,
        terminal: bool = False,
        ts: float = 0.0,
        epoch: str = "",
    ) -> None:
        self.job_id, self.seq, self.type, self.text = job_id, seq, type, text
        self.terminal, self.ts, self.epoch = terminal, ts, epoch
        self._ws_frame: bytes | None = None
        self._sse_event: bytes | None = None
        self._sse_chunk: bytes | None = None

    @property
    def ws_frame(self) -> bytes:
        """This message as a WebSocket text frame, built once for every socket it goes to."""
        frame = self._ws_frame
        if frame is None:
            frame = self._ws_frame = text_frame(self.text.encode())
        return frame

    @property
    def sse_event(self) -> bytes:
        """This message as an SSE event (id = position, event = type), built once likewise."""
        event = self._sse_event
        if event is None:
            at = position(self.epoch, self.seq) if self.seq >= 0 else None
            event = self._sse_event = format_sse_event(self.text, event=self.type, id=at)
        return event

    @property
    def sse_chunk(self) -> bytes:
        """The SSE event as a chunk of a chunked response body (``wire.DirectStream``)."""
        chunk = self._sse_chunk
        if chunk is None:
            chunk = self._sse_chunk = body_chunk(self.sse_event)
        return chunk

    def __repr__(self) -> str:
        return f"Outgoing({self.job_id[:8]}, {self.seq}, {self.type})"


CONTROL_SEQ = -1
"""The seq given to control messages (acks, errors, pongs), which are not job frames."""


HARD_LIMIT_FACTOR = 4


class Outbox:
    __slots__ = (
        "_clock",
        "_items",
        "_waiter",
        "coalesced",
        "deadline_s",
        "direct",
        "full_since",
        "hard_limit",
        "limit",
        "on_overflow",
        "overflowed",
        "start_writer",
    )

    def __init__(
        self,
        limit: int,
        *,
        deadline_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.hard_limit = limit * HARD_LIMIT_FACTOR
        self.deadline_s = deadline_s
        self._clock = clock
        # A list, not a deque: an empty deque is ~760 bytes per connection and this one is
        # nearly always empty (frames are written directly); pop(0) of a bounded list is cheap.
        self._items: list[Outgoing] = []
        # The writer's wake-up, only while it waits: lighter than an asyncio.Event per socket.
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.coalesced = 0
        self.full_since: float | None = None
        self.on_overflow: Callable[[], object] | None = None
        # Delivery without the writer task: tried only while no writer is busy and nothing
        # is queued (so order is kept); False from it means "queue it as usual". It takes
        # the messages that go out together (``put_many``), usually one.
        self.direct: Callable[[Sequence[Outgoing]], bool] | None = None
        # Set while the connection has no writer task running: a message that has to be
        # queued starts one (a WebSocket's writer ends again once the queue is sent). Most
        # sockets never need one (their frames go out directly).
        self.start_writer: Callable[[], object] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def detach(self) -> None:
        """The connection ended: drop the callbacks into its writer. They refer back to the
        connection's session, a cycle only the cyclic collector would free (about 40
        objects per closed socket); without them reference counting frees it at once."""
        self.direct = self.start_writer = self.on_overflow = None

    def put(self, item: Outgoing) -> None:
        if self.overflowed or self._sent_directly((item,)):
            return
        self._queue(item)

    def put_many(self, items: Sequence[Outgoing]) -> None:
        """Messages that go out together (frames a job published at once): directly in one
        write when they can, else queued one by one."""
        if self.overflowed or not items or self._sent_directly(items):
            return
        for item in items:
            self._queue(item)

    def _sent_directly(self, items: Sequence[Outgoing]) -> bool:
        return (
            not self._items
            and (self._waiter is not None or self.start_writer is not None)
            and self.direct is not None
            and self.direct(items)
        )

    def _queue(self, item: Outgoing) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self.limit and not self._queue_when_full(item):
            return
        self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self.start_writer is not None:
            start, self.start_writer = self.start_writer, None
            start()

    def _queue_when_full(self, item: Outgoing) -> bool:
        """Apply the policy to ``item`` arriving at a full outbox; True: append it."""
        now = self._clock()
        if self.full_since is None:
            self.full_since = now
        elif now - self.full_since > self.deadline_s:
            self._overflow()
            return False
        if item.type == "progress":
            self.coalesced += 1
            # Replace the same job's queued progress (if any) by this one, at the end: seq
            # order is kept, so clients that drop repeated seqs keep every later frame.
            return self._drop_progress_of(item.job_id)
        if len(self._items) >= self.hard_limit:
            self._overflow()
            return False
        return True

    def _drop_progress_of(self, job_id: str) -> bool:
        for queued in self._items:
            if queued.type == "progress" and queued.job_id == job_id:
                self._items.remove(queued)
                return True
        return False

    def abandon(self) -> None:
        """Close the connection as a slow consumer's (its client resumes with ``since``):
        for a watch the hub cannot bring up to date."""
        self._overflow()

    def _overflow(self) -> None:
        self.overflowed = True
        self._items.clear()
        self._wake()
        if self.on_overflow is not None:
            self.on_overflow()

    def expired(self) -> bool:
        """Full for longer than the deadline (checked without a new message arriving)."""
        return self.full_since is not None and self._clock() - self.full_since > self.deadline_s

    async def get(self) -> Outgoing | None:
        """The next message; None once the outbox overflowed (close the connection)."""
        while not self._items and not self.overflowed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.pop()

    def pop(self) -> Outgoing | None:
        """The next message without waiting; None when there is none, or once the outbox
        overflowed."""
        if self.overflowed or not self._items:
            return None
        item = self._items.pop(0)
        if self.full_since is not None and len(self._items) < self.limit:
            self.full_since = None
        return item


def outbox_for(settings: Settings) -> Outbox:
    return Outbox(settings.outbox_limit, deadline_s=settings.slow_consumer_deadline_s)

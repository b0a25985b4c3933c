"""The hub: this replica's fan-out of job frames to its local watchers.

One broker subscription per job that has at least one local watcher (reference counted),
whatever the number of sockets. Each frame from the broker is decoded once (its header),
turned into text once, and the same string is queued for every local watcher.

A watch starts by subscribing to live frames, then reads the snapshot and, to resume from
``since``, the history after it; ``resume.Sequencer`` merges them with the live frames
without gaps or repeats.
When the history no longer covers a client's ``since``, the client gets a snapshot frame
with ``recovered=false`` instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.broker.base import Broker
from server.frames import JobSnapshot, SnapshotFrame, encoder, header_decoder
from server.realtime.outbox import Outbox, Outgoing
from server.realtime.resume import Sequencer, history_covers

log = logging.getLogger("delineate.hub")

SnapshotSource = Callable[[str], Awaitable[JobSnapshot]]


class Watch:
    """One watcher of one job: where its frames go, and what it has seen."""

    __slots__ = ("job_id", "outbox", "sequencer")

    def __init__(self, job_id: str, outbox: Outbox, since: int | None) -> None:
        self.job_id = job_id
        self.outbox = outbox
        self.sequencer: Sequencer[Outgoing] = Sequencer(-1 if since is None else since)

    def offer(self, seq: int, item: Outgoing) -> None:
        for ready in self.sequencer.offer(seq, item):
            self.outbox.put(ready)

    def offer_many(self, items: list[Outgoing]) -> None:
        """Frames published together: those not seen yet go out together."""
        self.outbox.put_many(
            [ready for item in items for ready in self.sequencer.offer(item.seq, item)]
        )

    def caught_up(self, replay: list[tuple[int, Outgoing]]) -> None:
        for ready in self.sequencer.caught_up(replay):
            self.outbox.put(ready)


class _Channel:
    __slots__ = ("ready", "watches")

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Hub:
    def __init__(self, broker: Broker, snapshot_of: SnapshotSource) -> None:
        self._broker = broker
        self._snapshot_of = snapshot_of
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, job_id: str, payload: bytes) -> None:
        """Broker callback: a frame for every local watcher of ``job_id``, or frames the job
        published together (one per line: ``Journal.append_many``), which go to each
        watcher together."""
        channel = self._channels.get(job_id)
        if channel is None:
            return
        if b"\n" not in payload:
            item = _outgoing(job_id, payload)
            for watch in channel.watches:
                watch.offer(item.seq, item)
            return
        items = [_outgoing(job_id, frame) for frame in payload.split(b"\n")]
        for watch in channel.watches:
            watch.offer_many(items)

    async def watch(
        self, job_id: str, since: int | None, outbox: Outbox, preamble: Outgoing | None = None
    ) -> Watch:
        """Follow a job: ``preamble`` (e.g. an ack), then snapshot or history, then live."""
        watch = Watch(job_id, outbox, since)
        await self._attach(watch)
        try:
            replay = await self._replay(job_id, since)
        except BaseException:
            self.unwatch(watch)
            raise
        if preamble is not None:
            outbox.put(preamble)
        watch.caught_up(replay)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop following (synchronous, so it is safe in a cancelled task's cleanup)."""
        channel = self._channels.get(watch.job_id)
        if channel is None or watch not in channel.watches:
            return
        channel.watches.discard(watch)
        if not channel.watches:
            del self._channels[watch.job_id]
            self._spawn(self._release(watch.job_id))

    async def resync(self) -> None:
        """After the broker lost messages (reconnect): replay each watch from its last seq."""
        for channel in list(self._channels.values()):
            for watch in list(channel.watches):
                watch.sequencer.restart()
                since = watch.sequencer.last_seq
                replay = await self._replay(watch.job_id, None if since < 0 else since)
                watch.caught_up(replay)

    async def _attach(self, watch: Watch) -> None:
        channel = self._channels.get(watch.job_id)
        if channel is None:
            channel = self._channels[watch.job_id] = _Channel()
            channel.watches.add(watch)
            try:
                await self._broker.subscribe(watch.job_id)
            except BaseException as exc:
                channel.ready.set_exception(exc)
                self.unwatch(watch)
                raise
            channel.ready.set_result(None)
        else:
            channel.watches.add(watch)
            await asyncio.shield(channel.ready)

    async def _release(self, job_id: str) -> None:
        # A watcher may have come back before this ran (a page reload): its new channel has
        # subscribed already, and unsubscribing now would cut it off from live frames.
        if job_id not in self._channels:
            await self._broker.unsubscribe(job_id)

    async def _replay(self, job_id: str, since: int | None) -> list[tuple[int, Outgoing]]:
        # The snapshot first, then the history, which is then at least as new: every frame
        # the snapshot counts is in it (or, the last one, on its way live). The other way
        # round, frames published between the two reads were counted by the snapshot but
        # missing from the older history, and the client got a snapshot (recovered=false)
        # in place of frames it could have had: the load test saw a job's first frame go
        # that way in 3 runs of 70.
        snapshot = await self._snapshot_of(job_id)
        if since is None:
            return [(snapshot.seq, self._snapshot_item(snapshot, recovered=True))]
        history = await self._broker.history(job_id, since)
        ended = snapshot.status.is_terminal
        if history_covers(since, history.first_retained, snapshot.seq, ended):
            return [(seq, _outgoing(job_id, payload)) for seq, payload in history.frames]
        return [(snapshot.seq, self._snapshot_item(snapshot, recovered=False))]

    @staticmethod
    def _snapshot_item(snapshot: JobSnapshot, *, recovered: bool) -> Outgoing:
        frame = SnapshotFrame(
            job_id=snapshot.job_id,
            seq=snapshot.seq,
            job=snapshot,
            recovered=recovered,
            trace_id=snapshot.trace_id,
        )
        text = encoder.encode(frame).decode()
        terminal = snapshot.status.is_terminal
        return Outgoing(snapshot.job_id, snapshot.seq, "snapshot", text, terminal, frame.ts)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("broker unsubscribe failed", exc_info=task.exception())


def _outgoing(job_id: str, payload: bytes) -> Outgoing:
    header = header_decoder.decode(payload)
    text = payload.decode()
    return Outgoing(job_id, header.seq, header.type, text, header.is_terminal, header.ts)

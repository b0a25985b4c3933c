"""The hub: this replica's fan-out of job frames to its local watchers.

One broker subscription per job that has at least one local watcher (reference counted),
whatever the number of sockets. Each frame from the broker is decoded once (its header),
turned into text once, and the same string is queued for every local watcher.

A watch starts by subscribing to live frames, then reads the snapshot and, to resume from
``since``, the history after it; ``resume.Sequencer`` merges them with the live frames
without gaps or repeats.
When the history no longer covers a client's ``since``, the client gets a snapshot frame
with ``recovered=false`` instead of a silent gap.

Positions carry the job's epoch. A watcher resuming from another epoch, or a live watcher
whose job moves to a new epoch (the store lost its history or seq), gets a ``recovered=false``
snapshot of the new epoch and every frame after it: its old seqs mean nothing there. A job
the store no longer has at all ends for its watchers as failed (``job_lost``): ``on_lost``
writes that, and the frame reaches them like any other.

Pub/sub delivers at most once, and only from the node this replica listens to. ``audit``
is the net under it: a job that sent its watchers nothing for a while is read from the
store, and a watcher behind it catches up (frames published where this replica was not
listening, e.g. on a primary that a failover then demoted) or ends (the store lost the job).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from delineate.backoff import full_jitter
from delineate.broker.base import Broker
from delineate.errors import BackendUnavailable, NotFound
from delineate.realtime.outbox import Outbox, Outgoing
from delineate.realtime.resume import Sequencer, Since, history_covers
from delineate_protocol.frames import JobSnapshot, SnapshotFrame, encoder, header_decoder

log = logging.getLogger("delineate.hub")

SnapshotSource = Callable[[str], Awaitable[JobSnapshot]]
OnLost = Callable[[str, "str | None"], Awaitable[None]]
"""Called with (job id, owner) for a watched job the store no longer has."""
Replay = tuple[str, list[tuple[int, Outgoing]]]
"""The epoch of a replay and its (seq, message) pairs."""
MOVE_TRIES = 20


class Watch:
    """One watcher of one job: where its frames go, and what it has seen (epoch and seq)."""

    __slots__ = ("epoch", "job_id", "outbox", "owner", "sequencer")

    def __init__(
        self, job_id: str, outbox: Outbox, since: Since | None, owner: str | None = None
    ) -> None:
        self.job_id = job_id
        self.outbox = outbox
        self.owner = owner
        self.sequencer: Sequencer[Outgoing] = Sequencer(-1 if since is None else since.seq)
        self.epoch = None if since is None else since.epoch

    def offer(self, item: Outgoing) -> bool:
        """A live frame. False: it is of another epoch, and the watch must be moved."""
        if item.epoch != self.epoch and not self.sequencer.catching_up:
            return False
        for ready in self.sequencer.offer(item.seq, item):
            self.outbox.put(ready)
        return True

    def offer_many(self, items: list[Outgoing]) -> bool:
        """Frames published together: those not seen yet go out together."""
        if items[0].epoch != self.epoch and not self.sequencer.catching_up:
            return False
        self.outbox.put_many(
            [ready for item in items for ready in self.sequencer.offer(item.seq, item)]
        )
        return True

    def caught_up(self, replay: Replay) -> bool:
        """Deliver a replay of ``epoch``, then the live frames held meanwhile. False: some
        held frames are of another epoch (the job moved again), and the watch must move."""
        epoch, items = replay
        if self.epoch is not None and epoch != self.epoch:
            self.sequencer.last_seq = -1  # a new epoch's seqs start afresh for this watcher
        self.epoch = epoch
        moved = self.sequencer.drop_held(lambda item: item.epoch != epoch)
        for ready in self.sequencer.caught_up(items):
            self.outbox.put(ready)
        return not moved


class _Channel:
    __slots__ = ("audited", "heard", "ready", "watches")

    def __init__(self) -> None:
        self.watches: set[Watch] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.heard = 0
        """Messages delivered; a count (not a clock) keeps the delivery path cheap."""
        self.audited = -1
        """``heard`` at the last audit: unchanged since, the channel was silent a period."""


class Hub:
    def __init__(
        self, broker: Broker, snapshot_of: SnapshotSource, on_lost: OnLost | None = None
    ) -> None:
        self._broker = broker
        self._snapshot_of = snapshot_of
        self._on_lost = on_lost
        self._channels: dict[str, _Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def deliver(self, job_id: str, payload: bytes) -> None:
        """Broker callback: a frame for every local watcher of ``job_id``, or frames the job
        published together (one per line: ``Journal.append_many``), which go to each
        watcher together."""
        channel = self._channels.get(job_id)
        if channel is None:
            return
        channel.heard += 1
        if b"\n" not in payload:
            item = _outgoing(job_id, payload)
            for watch in channel.watches:
                if not watch.offer(item):
                    self._move(watch)
            return
        items = [_outgoing(job_id, frame) for frame in payload.split(b"\n")]
        for watch in channel.watches:
            if not watch.offer_many(items):
                self._move(watch)

    async def watch(
        self,
        job_id: str,
        since: Since | None,
        outbox: Outbox,
        preamble: Outgoing | None = None,
        owner: str | None = None,
    ) -> Watch:
        """Follow a job: ``preamble`` (e.g. an ack), then snapshot or history, then live.
        ``owner`` is who may see it (for the record of a job the store lost)."""
        watch = Watch(job_id, outbox, since, owner)
        await self._attach(watch)
        try:
            replay = await self._replay(job_id, since)
        except BaseException:
            self.unwatch(watch)
            raise
        if preamble is not None:
            outbox.put(preamble)
        if not watch.caught_up(replay):
            self._move(watch)
        elif since is not None and _resumed_at_the_end(replay, since):
            outbox.put(replay[1][-1][1])  # it has every frame; its end again ends its stream
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
        """After the broker lost messages (reconnect): replay each watch from its last
        position; a job the store lost meanwhile ends as failed (``on_lost``)."""
        for channel in list(self._channels.values()):
            for watch in list(channel.watches):
                watch.sequencer.restart()
                last = watch.sequencer.last_seq
                since = None if last < 0 else Since(watch.epoch, last)
                try:
                    await self._catch_up(watch, since)
                except BackendUnavailable:
                    raise  # the broker runs the whole resync again
                except Exception:  # one job's trouble must not stall every other watch
                    log.warning("watch of job %s did not catch up", watch.job_id, exc_info=True)
                    self._spawn(self._move_soon(watch))

    async def audit(self) -> None:
        """Read each job that was silent since the last audit from the store; its watchers
        that are behind it catch up from history (or get a ``recovered=false`` snapshot),
        and if the store no longer has it they end as ``job_lost``."""
        for job_id, channel in list(self._channels.items()):
            silent, channel.audited = channel.audited == channel.heard, channel.heard
            if not silent or not channel.ready.done():
                continue
            try:
                snapshot = await self._snapshot_of(job_id)
            except NotFound:
                snapshot = None
            except BackendUnavailable:
                return  # the store is away: the next audit tries again
            for watch in list(channel.watches):
                if watch.sequencer.catching_up or not _behind(watch, snapshot):
                    continue
                log.info("watch of job %s was behind the store; catching up", job_id)
                watch.sequencer.restart()
                last = watch.sequencer.last_seq
                try:
                    await self._catch_up(watch, None if last < 0 else Since(watch.epoch, last))
                except Exception:
                    self._spawn(self._move_soon(watch))  # it holds live frames: retry soon

    async def run_audits(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.audit()
            except Exception:
                log.warning("watch audit failed; the next one tries again", exc_info=True)

    def _move(self, watch: Watch) -> None:
        """The watch's job moved to a new epoch: hold its live frames, then send it a
        ``recovered=false`` snapshot of the new epoch and what follows."""
        if watch.sequencer.catching_up:
            return  # a replay is under way; it moves the watch itself if need be
        watch.sequencer.restart()
        self._spawn(self._move_soon(watch))

    async def _move_soon(self, watch: Watch) -> None:
        for attempt in range(MOVE_TRIES):
            if watch not in getattr(self._channels.get(watch.job_id), "watches", ()):
                return  # it left meanwhile
            try:
                await self._catch_up(watch, Since(None, -1))
                return
            except Exception as exc:  # the store away, or a lost job's end not written yet
                log.info("moving the watch of job %s: %r; trying again", watch.job_id, exc)
                await asyncio.sleep(full_jitter(attempt, base=0.1, cap=2.0))
        # It holds live frames and cannot be brought up to date: close its connection (as a
        # slow consumer's, 1013) so its client resumes from where it is, on any replica.
        log.warning("watch of job %s could not be brought up to date; closing it", watch.job_id)
        watch.outbox.abandon()

    async def _catch_up(self, watch: Watch, since: Since | None) -> None:
        try:
            replay = await self._replay(watch.job_id, since)
        except NotFound:
            if self._on_lost is None:
                raise
            await self._on_lost(watch.job_id, watch.owner)
            replay = await self._replay(watch.job_id, Since(None, -1))
        if not watch.caught_up(replay):
            self._move(watch)

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

    async def _replay(self, job_id: str, since: Since | None) -> Replay:
        # The snapshot first, then the history, which is then at least as new: every frame
        # the snapshot counts is in it (or, the last one, on its way live). The other way
        # round, frames published between the two reads were counted by the snapshot but
        # missing from the older history, and the client got a snapshot (recovered=false)
        # in place of frames it could have had.
        snapshot = await self._snapshot_of(job_id)
        epoch = snapshot.epoch
        if since is None:
            return epoch, [(snapshot.seq, self._snapshot_item(snapshot, recovered=True))]
        lost = [(snapshot.seq, self._snapshot_item(snapshot, recovered=False))]
        if since.seq < 0 or (since.epoch is not None and since.epoch != epoch):
            return epoch, lost
        if snapshot.status.is_terminal and since.seq >= snapshot.seq:
            return epoch, [(snapshot.seq, self._snapshot_item(snapshot, recovered=True))]
        history = await self._broker.history(job_id, since.seq)
        items = [(seq, _outgoing(job_id, payload)) for seq, payload in history.frames]
        ended = snapshot.status.is_terminal
        if any(item.epoch != epoch for _, item in items) or not history_covers(
            since.seq, history.first_retained, snapshot.seq, ended
        ):
            return epoch, lost
        return epoch, items

    @staticmethod
    def _snapshot_item(snapshot: JobSnapshot, *, recovered: bool) -> Outgoing:
        frame = SnapshotFrame(
            job_id=snapshot.job_id,
            seq=snapshot.seq,
            job=snapshot,
            recovered=recovered,
            trace_id=snapshot.trace_id,
        )
        frame.epoch = snapshot.epoch
        text = encoder.encode(frame).decode()
        terminal = snapshot.status.is_terminal
        return Outgoing(
            snapshot.job_id, snapshot.seq, "snapshot", text, terminal, frame.ts, snapshot.epoch
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("hub task failed", exc_info=task.exception())


def _resumed_at_the_end(replay: Replay, since: Since) -> bool:
    """The replay is the ended job's snapshot at or before ``since``: the sequencer drops it
    as seen, but the watcher must still hear that nothing more will come."""
    items = replay[1]
    return len(items) == 1 and items[0][1].terminal and items[0][0] <= since.seq


def _behind(watch: Watch, snapshot: JobSnapshot | None) -> bool:
    """The store (``None``: it lost the job) has moved past what the watcher saw."""
    if snapshot is None:
        return True
    return snapshot.epoch != watch.epoch or snapshot.seq > watch.sequencer.last_seq


def _outgoing(job_id: str, payload: bytes) -> Outgoing:
    header = header_decoder.decode(payload)
    text = payload.decode()
    return Outgoing(
        job_id, header.seq, header.type, text, header.is_terminal, header.ts, header.epoch
    )

"""Exactly-once ordering of one job's frames for one watcher (pure; no I/O).

A watcher subscribes to live frames FIRST and reads the snapshot or history SECOND, so no
frame can fall between the two. Live frames that arrive while it catches up are held, then
merged: everything is delivered in seq order, and nothing at or below the last delivered
seq is delivered again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Since(NamedTuple):
    """Where a watcher resumes: after ``seq`` of ``epoch`` (None: whatever epoch is current)."""

    epoch: str | None
    seq: int


def parse_since(raw: int | str | None) -> Since | None:
    """``12`` or ``"12"`` (the job's current epoch) or ``"<epoch>:12"``; the wire types have
    checked the shape already (``frames.POSITION_PATTERN``)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int):
        return Since(None, raw)
    epoch, _, seq = raw.rpartition(":")
    return Since(epoch or None, int(seq))


def position(epoch: str, seq: int) -> str:
    """The position of a frame as clients give it back (SSE ``id:``, ``since``)."""
    return f"{epoch}:{seq}" if epoch else str(seq)


def history_covers(since: int, first_retained: int | None, latest_seq: int, ended: bool) -> bool:
    """Can the frames after ``since`` be replayed exactly from a history read just after a
    snapshot at ``latest_seq`` (of a job that has ``ended`` or not)? Frames published after
    the read come live: the watcher subscribed before reading anything."""
    if since > latest_seq:
        return False  # the client claims frames this job never sent
    if first_retained is None:
        # Nothing kept when the history was read. A job's frames are saved in its record
        # before they reach the history, one after another: every frame the snapshot counts
        # but its own last one would be in the history. So only a client that missed none,
        # or just that last one (still on its way: it comes live), is fine; an ended job
        # sends nothing more, so there that last frame may be gone for good.
        return since == latest_seq or (since + 1 == latest_seq and not ended)
    return first_retained <= since + 1


class Sequencer(Generic[T]):
    def __init__(self, last_seq: int = -1) -> None:
        self.last_seq = last_seq
        self.catching_up = True
        self._held: list[tuple[int, T]] = []

    def offer(self, seq: int, item: T) -> list[T]:
        """A live frame: what to deliver now (nothing while catching up, or a duplicate)."""
        if self.catching_up:
            self._held.append((seq, item))
            return []
        return self._accept(seq, item)

    def drop_held(self, stale: Callable[[T], bool]) -> bool:
        """Forget held frames ``stale`` picks (another epoch's); whether there were any."""
        kept = [pair for pair in self._held if not stale(pair[1])]
        dropped = len(kept) != len(self._held)
        self._held = kept
        return dropped

    def restart(self) -> None:
        """Hold live frames again (the broker reconnected; history will be read again)."""
        self.catching_up = True

    def caught_up(self, replay: list[tuple[int, T]]) -> list[T]:
        """Deliver the snapshot/history ``replay``, then the frames held meanwhile.

        Held frames older than the replay's first item are already reflected in it (a
        snapshot at seq S covers every frame up to S), so they are dropped."""
        floor = replay[0][0] if replay else -1
        held = [pair for pair in self._held if pair[0] >= floor]
        # sorted() is stable: on equal seq the replayed item wins and the held one is a dup.
        merged = sorted([*replay, *held], key=lambda pair: pair[0])
        self._held.clear()
        self.catching_up = False
        out: list[T] = []
        for seq, item in merged:
            out.extend(self._accept(seq, item))
        return out

    def _accept(self, seq: int, item: T) -> list[T]:
        if seq <= self.last_seq:
            return []
        self.last_seq = seq
        return [item]

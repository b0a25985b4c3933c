"""The Broker interface: how encoded frames move between a job and its watchers.

A broker does four things and no more: publish a job's encoded frames (append them to the
job's bounded history, then fan them out to every replica that subscribed to the job's
channel, as one message); read the history after a seq; subscribe/unsubscribe
this replica to a job's channel; and broadcast a small signal to every replica. Policy
(who watches what, resume, slow clients) lives in ``delineate.realtime.hub``. One module per
backend: ``memory`` (one process) and ``redis``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

import msgspec

Deliver = Callable[[str, bytes], None]
"""Called with (job_id, encoded frame) for every frame on a channel this replica follows."""

OnSignal = Callable[[bytes], None]
"""Called with every message sent with ``Broker.signal`` (by any replica)."""

Resync = Callable[[], Awaitable[None]]
"""Called after the broker reconnected: messages may have been lost while it was down."""


class History(msgspec.Struct, frozen=True):
    """Frames after the asked-for seq, in order, and the oldest seq still retained."""

    frames: list[tuple[int, bytes]]
    first_retained: int | None


class Broker(abc.ABC):
    name: str = "broker"
    health_key: str | None = None
    """The /health check this backend reports under (None: nothing to check)."""

    @abc.abstractmethod
    async def start(self, deliver: Deliver, on_signal: OnSignal, resync: Resync) -> None:
        """Connect and begin delivering messages of subscribed channels to ``deliver``."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def publish(
        self, job_id: str, epoch: str, frames: list[tuple[int, bytes]], *, terminal: bool
    ) -> None:
        """Append (seq, frame) pairs to the history and fan them out as one message, a frame
        per line. Frames of another epoch than the history's replace it (the old epoch's
        seqs mean nothing in the new one). ``terminal`` starts the retention clock."""

    @abc.abstractmethod
    async def history(self, job_id: str, since: int) -> History: ...

    @abc.abstractmethod
    async def subscribe(self, job_id: str) -> None:
        """Follow the job's channel. Returns once the subscription is in effect, so every
        frame published after a history read that follows reaches ``deliver``: the hub's
        exact resume (subscribe, then read history) rests on this."""

    @abc.abstractmethod
    async def unsubscribe(self, job_id: str) -> None:
        """Stop following the channel. Subscriptions are a set, not a count, as in Redis:
        one unsubscribe undoes any number of subscribes."""

    @abc.abstractmethod
    async def signal(self, payload: bytes) -> None:
        """Send ``payload`` to every replica's ``on_signal`` (this one's included)."""

    async def check(self) -> bool:
        """True when the broker can serve; used by /health."""
        return True

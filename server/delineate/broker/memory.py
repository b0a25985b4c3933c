"""In-process broker: the embedded default, and the reference the Redis broker must match."""

from __future__ import annotations

import asyncio
from collections import deque

from delineate.broker.base import Broker, Deliver, History, OnSignal, Resync


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, *, history_max_frames: int, retention_s: float) -> None:
        self._history_max = history_max_frames
        self._retention_s = retention_s
        self._history: dict[str, tuple[str, deque[tuple[int, bytes]]]] = {}
        self._subscribed: set[str] = set()  # a set, like Redis's channels
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._deliver: Deliver | None = None
        self._on_signal: OnSignal | None = None

    async def start(self, deliver: Deliver, on_signal: OnSignal, resync: Resync) -> None:
        self._deliver, self._on_signal = deliver, on_signal

    async def signal(self, payload: bytes) -> None:
        if self._on_signal is not None:
            self._on_signal(payload)

    async def stop(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        self._deliver = None

    async def publish(
        self, job_id: str, epoch: str, frames: list[tuple[int, bytes]], *, terminal: bool
    ) -> None:
        kept = self._history.get(job_id)
        if kept is None or kept[0] != epoch:
            kept = self._history[job_id] = (epoch, deque(maxlen=self._history_max))
        kept[1].extend(frames)
        if terminal:
            self._expire_later(job_id)
        if self._deliver is not None and job_id in self._subscribed:
            self._deliver(job_id, b"\n".join(payload for _, payload in frames))

    async def history(self, job_id: str, since: int) -> History:
        kept = self._history.get(job_id)
        if not kept or not kept[1]:
            return History(frames=[], first_retained=None)
        frames = kept[1]
        return History(frames=[f for f in frames if f[0] > since], first_retained=frames[0][0])

    async def subscribe(self, job_id: str) -> None:
        self._subscribed.add(job_id)

    async def unsubscribe(self, job_id: str) -> None:
        self._subscribed.discard(job_id)

    def _expire_later(self, job_id: str) -> None:
        if job_id in self._expiry:
            return
        loop = asyncio.get_running_loop()
        self._expiry[job_id] = loop.call_later(self._retention_s, self._forget, job_id)

    def _forget(self, job_id: str) -> None:
        self._expiry.pop(job_id, None)
        self._history.pop(job_id, None)

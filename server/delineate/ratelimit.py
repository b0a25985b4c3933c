"""Fixed-window rate limiting per client: the window arithmetic (pure) and the in-process
counter. ``delineate.redis.ratelimit`` keeps the same counts in Redis, shared by replicas."""

from __future__ import annotations

import math
from typing import Protocol

import msgspec


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Seconds until the window ends."""


class Limiter(Protocol):
    async def hit(self, client: str, now: float) -> Decision: ...


def window_start(now: float, window_s: float) -> float:
    return math.floor(now / window_s) * window_s


def decide(limit: int, window_s: float, start: float, count: int, now: float) -> Decision:
    """The decision for the ``count``-th request of the window that began at ``start``."""
    return Decision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        reset_s=max(1, math.ceil(start + window_s - now)),
    )


class FixedWindowLimiter:
    """Counts in this process: the embedded default, and the fallback while Redis is away."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, client: str, now: float) -> Decision:
        return self.hit_now(client, now)

    def hit_now(self, client: str, now: float) -> Decision:
        start = window_start(now, self.window_s)
        started, count = self._windows.get(client, (start, 0))
        if started != start:
            count = 0
            if len(self._windows) > 10_000:
                self._forget_before(start)
        count += 1
        self._windows[client] = (start, count)
        return decide(self.limit, self.window_s, start, count, now)

    def _forget_before(self, start: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] >= start}

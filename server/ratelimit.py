"""Fixed-window rate limiting per client (pure; the HTTP edge applies it)."""

from __future__ import annotations

import math

import msgspec


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Seconds until the window ends."""


class FixedWindowLimiter:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, client: str, now: float) -> Decision:
        start = math.floor(now / self.window_s) * self.window_s
        window_start, count = self._windows.get(client, (start, 0))
        if window_start != start:
            count = 0
            if len(self._windows) > 10_000:
                self._forget_before(start)
        count += 1
        self._windows[client] = (start, count)
        reset = max(1, math.ceil(start + self.window_s - now))
        return Decision(
            allowed=count <= self.limit,
            limit=self.limit,
            remaining=max(0, self.limit - count),
            reset_s=reset,
        )

    def _forget_before(self, start: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] >= start}

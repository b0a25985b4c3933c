"""Reconnect delays: exponential with full jitter, injectable (tests pass a fast one)."""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct, frozen=True):
    base: float = 0.25
    cap: float = 10.0
    seed: int | None = None

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based): uniform in [0, min(cap, base*2^n)]."""
        rng = random.Random(None if self.seed is None else self.seed + attempt)
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))

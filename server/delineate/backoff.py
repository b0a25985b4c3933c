"""Capped exponential backoff with full jitter (pure): reconnects and job retries use it."""

from __future__ import annotations

import random


def full_jitter(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """A delay in [0, min(cap, base * 2**attempt)]: retries spread out instead of stampeding."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return (rng or random).uniform(0, ceiling)

"""How a served replica runs Python's cyclic garbage collector.

Thousands of long-lived sockets are hundreds of thousands of tracked objects, and a pass of
an older generation walks every one of them while the event loop stands still: the first
generation-1 pass after 11,000 sockets connected took 0.55 s and found 10 objects of
garbage (docs/performance.md). Connections, most of a replica's long-lived objects, end
without cycles: a closed socket or stream is freed by reference counting
(``tests/server/realtime/test_teardown.py``), and frames are garbage that never outlives a
young pass.

So (``tune``): everything loaded at start-up is frozen out of the collector's sight, young
passes come every 50,000 allocations, and whatever survives a young pass is frozen too
(``freeze_survivors``). The older generations then stay empty and their passes cost nothing.
What freezing keeps is cyclic garbage among objects that had lived through a young pass;
``sweep_every`` bounds it: every ``GC_SWEEP_INTERVAL_S`` one full pass over everything,
frozen objects included (``sweep``), logged with how much it freed.
``delineate_gc_pause_seconds`` shows every pass. (``gc.get_freeze_count()`` walks the
whole frozen list, so it is read only at a sweep.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger("delineate.gc")

YOUNG_THRESHOLD = 50_000
"""Allocations (less deallocations) of tracked objects between young passes."""


def tune() -> None:
    """Freeze what start-up loaded, space young passes, and freeze every young survivor."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
    freeze_survivors(True)


def _freeze_after_young_pass(phase: str, info: dict[str, Any]) -> None:
    # "stop" comes once the pass is complete: what is left of the young generation lives on.
    if phase == "stop" and info["generation"] == 0:
        gc.freeze()


def freeze_survivors(on: bool) -> None:
    """Start (or stop) freezing what survives each young pass."""
    installed = _freeze_after_young_pass in gc.callbacks
    if on and not installed:
        gc.callbacks.append(_freeze_after_young_pass)
    elif not on and installed:
        gc.callbacks.remove(_freeze_after_young_pass)


def freezing_survivors() -> bool:
    return _freeze_after_young_pass in gc.callbacks


def sweep() -> int:
    """One full pass over every object, frozen ones included, then freeze what is left:
    the cyclic garbage that freezing kept is freed. The number of objects collected."""
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()


async def sweep_every(interval_s: float) -> None:
    """``sweep`` every ``interval_s`` while survivors are frozen (a served replica; an app
    run in-process by tests or another server keeps the collector as it is)."""
    while True:
        await asyncio.sleep(interval_s)
        if not freezing_survivors():
            continue
        started = time.perf_counter()
        collected = sweep()
        log.info(
            "gc sweep",
            extra={
                "collected": collected,
                "frozen": gc.get_freeze_count(),
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

"""Freezing what survives a young collector pass, and the sweep that bounds what it keeps."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from delineate import gc_tuning


class Node:
    """A tracked object that can be part of a cycle and weakly referenced."""

    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    yield
    gc_tuning.freeze_survivors(False)
    gc.unfreeze()
    gc.enable()


def tracked_ids() -> set[int]:
    """Ids of the objects the collector's generations hold (frozen ones are not there)."""
    return {id(thing) for thing in gc.get_objects()}


def test_a_young_pass_freezes_what_survived_it() -> None:
    gc_tuning.freeze_survivors(True)
    gc.disable()  # the one pass is the test's own
    survivors = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    gc.collect(0)
    assert gc.get_freeze_count() >= before + len(survivors)
    assert id(survivors[0]) not in tracked_ids()
    gc_tuning.freeze_survivors(False)
    newer = Node()
    gc.collect(0)
    assert id(newer) in tracked_ids()  # no longer frozen once stopped


def test_a_sweep_frees_the_cyclic_garbage_freezing_kept() -> None:
    gc_tuning.freeze_survivors(True)
    node = Node()
    node.other = node  # a cycle: only the collector frees it
    gone = weakref.ref(node)
    gc.collect(0)  # it survives the pass, so it is frozen
    del node
    gc.collect()
    assert gone() is not None  # frozen: out of every pass's sight
    assert gc_tuning.sweep() >= 1
    assert gone() is None
    assert gc.get_freeze_count() > 0  # what lives on is frozen again


async def test_sweeps_run_only_while_survivors_are_frozen() -> None:
    """An app run in-process (tests, another server) keeps the collector as it was."""
    node = Node()
    node.other = node
    gone = weakref.ref(node)
    gc.freeze()
    del node
    sweeps = asyncio.create_task(gc_tuning.sweep_every(0.01))
    try:
        await asyncio.sleep(0.1)
        assert gone() is not None  # not freezing: no sweep
        gc_tuning.freeze_survivors(True)
        async with asyncio.timeout(5):
            while gone() is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        sweeps.cancel()

"""The stores' thread pool: every thread running before the first call."""

from __future__ import annotations

import threading

import pytest

from delineate.storage.threads import BlockingCalls


def threads_named(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


async def test_every_thread_is_started_before_the_first_call() -> None:
    calls = BlockingCalls(5, "pool-under-test")
    assert threads_named("pool-under-test") == 0
    calls.start()
    try:
        assert threads_named("pool-under-test") == 5
        assert await calls.run(divmod, 17, 5) == (3, 2)
        assert await calls.run(int, "ff", base=16) == 255
        with pytest.raises(ZeroDivisionError):
            await calls.run(divmod, 1, 0)
        assert threads_named("pool-under-test") == 5  # no thread started by a call
    finally:
        calls.stop()
    with pytest.raises(RuntimeError):
        await calls.run(divmod, 1, 1)  # stopped: no new calls

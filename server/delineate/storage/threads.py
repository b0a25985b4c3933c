"""The thread pool a store runs its blocking calls in, with every thread started up front.

``ThreadPoolExecutor`` starts a thread when a call finds none idle, and ``Thread.start``
blocks the caller (here: the event loop) until the new thread has run: on a busy box, when
many bundles complete at once, the pool would grow in the middle of the burst with the loop
stuck in ``Thread.start``. Started at ``start()``, the threads cost the same memory they
would soon anyway, and no call ever waits for one to be born.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class BlockingCalls:
    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def start(self) -> None:
        """Start every thread now: each of ``workers`` calls waits for all the others, so
        none finds an idle thread and the pool starts one per call."""
        everyone = threading.Barrier(self.workers)
        for started in [self._pool.submit(everyone.wait) for _ in range(self.workers)]:
            started.result()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def stop(self) -> None:
        """No new calls; queued ones are dropped, running ones finish on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

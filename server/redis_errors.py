"""Maps redis-py's exceptions to ``BackendUnavailable`` at the boundary of the Redis backends."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import ConnectionError, TimeoutError

from server.errors import BackendUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def unavailable_on_disconnect(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate a backend method so a lost connection surfaces as BackendUnavailable."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"redis unavailable: {exc}") from exc

    return wrapper

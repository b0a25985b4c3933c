"""Maps redis-py's exceptions to ``BackendUnavailable`` at the boundary of the Redis backends."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    TimeoutError,
    TryAgainError,
)

from delineate.errors import BackendUnavailable

NOT_A_WRITABLE_PRIMARY = ("READONLY", "NOREPLICAS")
"""Error replies from a node that must not take this replica's writes: one demoted to a
replica (a failover), or a primary with no live replica (``min-replicas-to-write``), as an old
primary that restarted alone is until the sentinels demote it. Both are a lost connection:
the next one asks Sentinel for the primary again."""


def from_a_lost_primary(message: str) -> bool:
    return message.startswith(NOT_A_WRITABLE_PRIMARY)


CLUSTER_UNAVAILABLE = (ClusterDownError, ClusterError, RedisClusterException, TryAgainError)
"""A Cluster failing over or migrating past redis-py's retries: unavailable for now."""

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
        except (ConnectionError, TimeoutError, OSError, *CLUSTER_UNAVAILABLE) as exc:
            raise BackendUnavailable(f"redis unavailable: {exc}") from exc

    return wrapper

"""The project's own Redis paths on a Cluster: the pipelined script calls and the pub/sub
reader talk to the primary that owns a key's slot.

redis-py's ``RedisCluster`` keeps the slot map (``nodes_manager``) and serves every ordinary
command. The journal's pipe (``delineate.redis.pipe``) and the broker's lean pub/sub reader
(``delineate.broker.redis_pubsub``) make connections from a pool-like object; ``NodePool``
gives them one per cluster node, with the node's own connection options. ``ClusterPipe``
keeps a ``RedisPipe`` per primary and sends each script call to the owner of its first
key's slot, following the Cluster's redirections:

- ``MOVED``: the slot map is stale (a failover, a finished migration): refresh it, go again.
- ``ASK``: the slot is migrating and the keys are already on the target: ``ASKING`` and the
  call, back to back on the target's pipe.
- ``TRYAGAIN`` (a multi-key call while the slot's keys are split) and ``CLUSTERDOWN`` (a
  failover in progress): wait a moment, go again.

All of these are refused before the script runs, so going again never applies it twice. A
lost connection is not retried here (the call may have run): it is raised, as on one node,
and the map is refreshed before the next call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from delineate.redis.pipe import PipeScript, RedisPipe

REDIRECTS = 40
"""Redirections or waits one call follows at most (a migration or failover in progress)."""
WAIT_S = 0.05


def pipe_of(client: Any) -> RedisPipe | ClusterPipe:
    """A pipe to ``client``'s Redis: one pipelined connection to the node (or to the primary
    a Sentinel names), or one per primary of a Cluster."""
    from delineate.redis.client import is_cluster

    return ClusterPipe(client) if is_cluster(client) else RedisPipe(client.connection_pool)


class NodePool:
    """A connection factory for one cluster node, shaped as the pipe and reader expect."""

    def __init__(self, node: Any) -> None:
        self.name: str = node.name
        self.connection_kwargs: dict[str, Any] = {
            **node.connection_kwargs,
            "retry": Retry(NoBackoff(), 0),  # the callers see every disconnect
        }
        self._connection_class = node.connection_class

    def make_connection(self) -> Any:
        return self._connection_class(**self.connection_kwargs)


class ClusterPipe:
    """``RedisPipe``'s ``evalsha`` and ``call``, routed by key slot over a Cluster."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._pipes: dict[str, RedisPipe] = {}
        self._stale = False
        self.redirects = 0
        """Redirections and waits followed (for tests)."""

    async def evalsha(
        self, script: PipeScript, keys: list[str], args: list[str | int | bytes]
    ) -> Any:
        # After ASK the script goes in full: an EVALSHA refused for NOSCRIPT would lose
        # the ASKING that let it in.
        return await self._routed(
            keys[0],
            lambda pipe: pipe.evalsha(script, keys, args),
            lambda pipe: pipe.call("EVAL", script.source, len(keys), *keys, *args),
        )

    async def call_for(self, key: str, *args: str | int | bytes) -> Any:
        """One command about ``key`` to the primary that owns its slot."""
        return await self._routed(key, lambda pipe: pipe.call(*args), None)

    async def _routed(self, key: str, send: Any, send_asked: Any) -> Any:
        manager = self._cluster.nodes_manager
        slot = self._cluster.keyslot(key)
        asking: str | None = None
        for _ in range(REDIRECTS):
            if self._stale:
                self._stale = False
                await manager.initialize()
            try:
                if asking is not None:
                    pipe = self._pipe_for(asking)
                    asked = send_asked or send
                    _, reply = await asyncio.gather(pipe.call("ASKING"), asked(pipe))
                    return reply
                node = manager.get_node_from_slot(slot)
                return await send(self._pipe_for(node.name, node))
            except ResponseError as exc:
                message = str(exc)
                kind = message.split(" ", 1)[0]
                self.redirects += 1
                asking = None
                if kind == "MOVED":
                    self._stale = True
                elif kind == "ASK":
                    asking = message.split(" ")[2]
                elif kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    await asyncio.sleep(WAIT_S)
                else:
                    raise
            except (RedisConnectionError, RedisTimeoutError, OSError):
                self._stale = True
                raise
            except Exception as exc:  # SlotNotCoveredError: a failover in progress
                if type(exc).__name__ != "SlotNotCoveredError":
                    raise
                self._stale = True
                await asyncio.sleep(WAIT_S * 4)
        raise RedisConnectionError(f"slot {slot} kept moving")

    def _pipe_for(self, name: str, node: Any = None) -> RedisPipe:
        pipe = self._pipes.get(name)
        if pipe is None:
            if node is None:
                node = self._cluster.nodes_manager.nodes_cache.get(name)
                if node is None:
                    host, _, port = name.rpartition(":")
                    node = self._cluster.nodes_manager.get_node(host, int(port))
                if node is None:
                    raise RedisConnectionError(f"unknown cluster node {name}")
            pipe = self._pipes[name] = RedisPipe(NodePool(node))
        return pipe

    async def aclose(self) -> None:
        pipes, self._pipes = list(self._pipes.values()), {}
        await asyncio.gather(*(pipe.aclose() for pipe in pipes), return_exceptions=True)

"""The Redis broker's listener on a Cluster: sharded pub/sub, one connection per primary.

Frames go out with SPUBLISH (the journal's script) to the job's shard channel, which only
the primary owning the channel's slot (and its replicas) carries, so a frame crosses no
cluster bus. The replica listens with SSUBSCRIBE on one connection per primary (each read
by ``redis_pubsub``'s lean reader in a task of its own), subscribing each followed channel
on the primary that owns its slot; following stays reference-counted by the hub.

Everything that can move a channel's slot ends in one path, the base broker's reconnect:
the slot map is read again, every shard connection is made again, every channel is
SSUBSCRIBEd on its owner (the replies read), and ``resync`` replays from history what the
hub's watchers missed meanwhile. That path is taken when
- a shard connection drops or goes silent (a primary killed: after the failover its
  replica owns the slots);
- Redis answers an SSUBSCRIBE with an error (``MOVED``: the map was stale);
- Redis unsubscribes a channel this replica still follows (a ``sunsubscribe`` it did not
  ask for: the slot migrated away, or the node became a replica);
- a channel's slot has no known primary (a failover in progress).
During a migration a frame may be SPUBLISHed on the slot's new owner before the old one
lets go; it is in the history there, and the resync that follows the unsubscribe delivers it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from delineate.broker.redis import CONNECT_TIMEOUT_S, RedisBroker
from delineate.broker.redis_pubsub import PubSubConnection, PubSubReply
from delineate.redis import keys as keys
from delineate.redis.cluster import NodePool

log = logging.getLogger("delineate.broker")


class ShardedRedisBroker(RedisBroker):
    def __init__(self, client: Any, **options: Any) -> None:
        super().__init__(client, **options)
        self._shards: dict[str, PubSubConnection] = {}
        # SUNSUBSCRIBEs sent and not yet answered, per channel: any other sunsubscribe
        # is Redis taking the channel away.
        self._leaving: collections.Counter[str] = collections.Counter()
        self.moves = 0
        """Reconnects caused by a slot that moved (for tests)."""

    # --- connecting --------------------------------------------------------------------

    async def _connect(self) -> None:
        opened: dict[str, PubSubConnection] = {}
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._redis.nodes_manager.initialize()
                for node in self._redis.nodes_manager.get_nodes_by_server_type("primary"):
                    opened[node.name] = await PubSubConnection.open(NodePool(node))
                await self._subscribe_shards(opened)
        except BaseException:
            for pubsub in opened.values():
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            raise
        self._shards = opened
        self._pubsub = next(iter(opened.values()), None)  # the base's "connected" marker
        self.connected = True

    def _owner(self, channel: str) -> str | None:
        """The name of the primary owning ``channel``'s slot (None: none known now)."""
        manager = self._redis.nodes_manager
        try:
            return str(manager.get_node_from_slot(self._redis.keyslot(channel)).name)
        except Exception:  # SlotNotCoveredError: a failover in progress
            return None

    async def _subscribe_shards(self, shards: dict[str, PubSubConnection]) -> None:
        """SSUBSCRIBE the control channel and every followed channel on its owner and read
        the replies (the base broker's ``_subscribe_all``, per shard)."""
        self._leaving.clear()
        done: set[str] = set()
        while todo := ({keys.CONTROL_CHANNEL} | self._channels) - done:
            by_shard: dict[str, list[str]] = collections.defaultdict(list)
            for channel in todo:
                owner = self._owner(channel)
                if owner is None or owner not in shards:
                    raise RedisConnectionError(f"no known primary owns {channel}'s slot")
                by_shard[owner].append(channel)
            for owner, channels in by_shard.items():
                pubsub = shards[owner]
                for channel in channels:  # one SSUBSCRIBE may only name channels of one slot
                    await pubsub.ssubscribe(channel)
                replies = len(channels)
                while replies:
                    for reply in await pubsub.read():
                        if isinstance(reply, list) and reply[0] == b"ssubscribe":
                            replies -= 1
                        else:
                            self._handle(reply)
            done |= todo
        if stale := done - self._channels - {keys.CONTROL_CHANNEL}:
            for channel in stale:
                await self._leave(channel, shards)

    async def _close_pubsub(self) -> None:
        shards, self._shards = self._shards, {}
        self._pubsub = None
        await super()._close_pubsub()  # answers every waiting subscriber
        for pubsub in shards.values():
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    # --- listening ---------------------------------------------------------------------

    async def _pump(self) -> None:
        readers = [
            asyncio.create_task(self._read_shard(pubsub), name=f"redis-shard-{name}")
            for name, pubsub in self._shards.items()
        ]
        if not readers:
            return
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # the first shard's failure ends them all: reconnect
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read_shard(self, pubsub: PubSubConnection) -> None:
        while True:
            for reply in await pubsub.read():
                self._handle(reply)

    def _listening(self) -> list[tuple[str, PubSubConnection]]:
        """The base broker's health PING goes to every shard connection."""
        return [(f"shard {name}", pubsub) for name, pubsub in self._shards.items()]

    def _handle(self, reply: PubSubReply) -> None:
        if not isinstance(reply, list):
            return
        kind = reply[0]
        if kind == b"smessage":
            self._dispatch(reply[1], reply[2])
        elif kind == b"ssubscribe":
            super()._handle([b"subscribe", *reply[1:]])
        elif kind == b"sunsubscribe":
            channel = reply[1].decode()
            if self._leaving[channel]:
                self._leaving[channel] -= 1
                if not self._leaving[channel]:
                    del self._leaving[channel]
            elif channel in self._channels or channel == keys.CONTROL_CHANNEL:
                self.moves += 1
                raise RedisConnectionError(f"{channel} was taken away (its slot moved)")

    # --- Broker ------------------------------------------------------------------------

    async def subscribe(self, job_id: str) -> None:
        channel = keys.job_channel(job_id)
        self._channels.add(channel)
        if self._pubsub is None:
            return  # reconnecting: the channel is subscribed with the rest, then resync
        owner = self._owner(channel)
        pubsub = self._shards.get(owner) if owner is not None else None
        if pubsub is None:
            # The map names a primary this replica has no connection to (a failover or a
            # new node): reconnect everything; the resync covers this channel.
            await self._drop_a_shard()
            return
        answered = asyncio.get_running_loop().create_future()
        self._unanswered.setdefault(channel, []).append(answered)
        with contextlib.suppress(RedisError, OSError):
            await pubsub.ssubscribe(channel)
        await answered

    async def unsubscribe(self, job_id: str) -> None:
        channel = keys.job_channel(job_id)
        self._channels.discard(channel)
        if self._pubsub is not None:
            await self._leave(channel, self._shards)

    async def _leave(self, channel: str, shards: dict[str, PubSubConnection]) -> None:
        owner = self._owner(channel)
        pubsub = shards.get(owner) if owner is not None else None
        if pubsub is None:
            return  # no owner known: the next reconnect does not subscribe it
        self._leaving[channel] += 1
        with contextlib.suppress(RedisError, OSError):
            await pubsub.sunsubscribe(channel)

    async def _drop_a_shard(self) -> None:
        """Close one shard connection: its reader fails, and the listener reconnects."""
        for pubsub in list(self._shards.values())[:1]:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

"""Redis broker: one pub/sub connection per replica, a Stream per job for history.

- A job's frames are kept in its Stream under the explicit ids ``<seq>-0`` (so XRANGE by
  seq is exact) and PUBLISHed to the job's channel; the journal's script does both with
  the guarded write (``delineate.journal.redis``). The stream is trimmed to
  ``history_max_frames`` and expires ``retention_s`` after the last frame.
- The replica subscribes to a job's channel only while a local client follows the job
  (the hub reference-counts), plus one control channel for signals. ``subscribe`` returns
  only once Redis's reply to SUBSCRIBE has been read. Returning when the command is
  written is not enough: nothing orders commands across connections, so Redis may run the
  history read that the hub sends next on another connection first, and a frame
  published in between would be in neither the history nor the channel.
- A supervised listener reads the pub/sub connection (``redis_pubsub``: redis-py's
  connection, read by a lean hiredis reader), made by a client of its own with no retries:
  redis-py would otherwise reconnect it silently and frames published during the gap would
  be lost without a resync. When the connection drops, or stays silent through a health
  PING (a half-open TCP connection reports nothing by itself), the listener reconnects
  with capped, jittered backoff, resubscribes every channel (and reads the replies), then
  calls ``resync`` so the hub replays from history what was published while it was away.
  Frames that arrive meanwhile are held and delivered after the replay, so none overtakes
  the ones it replays.
- On a Cluster, ``redis_sharded.ShardedRedisBroker`` listens instead (SSUBSCRIBE, one
  connection per primary); publishing here then uses SPUBLISH to the channel's shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from delineate.backoff import full_jitter
from delineate.broker.base import Broker, Deliver, History, OnSignal, Resync
from delineate.broker.redis_pubsub import PubSubConnection, PubSubReply
from delineate.redis import keys as keys
from delineate.redis.client import is_cluster, without_retries
from delineate.redis.errors import unavailable_on_disconnect

log = logging.getLogger("delineate.broker")
CONTROL = keys.CONTROL_CHANNEL.encode()

RECONNECT_BASE_S = 0.1
RECONNECT_CAP_S = 5.0
CONNECT_TIMEOUT_S = 10.0
HEALTH_INTERVAL_S = 10.0
"""A PING on the pub/sub connection this often; no byte back by the next one: reconnect."""


class RedisBroker(Broker):
    name = "redis"
    health_key = "redis"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        history_max_frames: int,
        retention_s: int,
        health_interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        # Any: redis-py types every reply as a bytes | str | int union; we decode at the edge.
        self._redis: Any = client
        self._sharded = is_cluster(client)
        # The Cluster's listener (``redis_sharded``) connects to each primary itself.
        self._listen_client: Any = None if self._sharded else without_retries(client)
        self._history_max = history_max_frames
        self._retention_s = retention_s
        self._health_interval_s = health_interval_s
        self._channels: set[str] = set()
        self._pubsub: PubSubConnection | None = None
        # Per channel, a future per SUBSCRIBE sent and not yet answered (Redis answers them
        # in order), resolved by the listener when the reply arrives.
        self._unanswered: dict[str, list[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._deliver: Deliver | None = None
        self._on_signal: OnSignal | None = None
        self._resync: Resync | None = None
        self.connected = False
        self.reconnects = 0
        # Frames that arrive from the moment the listener reconnects until the resync has
        # replayed history (None: deliver at once). A frame published after the resubscribe
        # would otherwise reach a watcher before the frames it missed, which the resync
        # then takes for already seen: they would be lost.
        self._held: list[tuple[bytes, bytes]] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, deliver: Deliver, on_signal: OnSignal, resync: Resync) -> None:
        self._deliver, self._on_signal, self._resync = deliver, on_signal, resync
        await self._connect()
        self._listener = asyncio.create_task(self._listen(), name="redis-broker-listener")
        self._watchdog = asyncio.create_task(self._watch_health(), name="redis-broker-health")

    async def stop(self) -> None:
        for task in (self._watchdog, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_pubsub()
        if self._listen_client is not None:
            await self._listen_client.aclose()

    async def _connect(self) -> None:
        pubsub: PubSubConnection | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                pubsub = await PubSubConnection.open(self._listen_client.connection_pool)
                await self._subscribe_all(pubsub)
        except BaseException:
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            raise
        self._pubsub = pubsub
        self.connected = True

    async def _subscribe_all(self, pubsub: PubSubConnection) -> None:
        """Subscribe the control channel and every followed channel, and read Redis's
        replies: after this a history read cannot miss a frame published on them (see the
        module docstring). Channels followed meanwhile are subscribed too, ones let go
        meanwhile are dropped again."""
        done: set[str] = set()
        while todo := ({keys.CONTROL_CHANNEL} | self._channels) - done:
            await pubsub.subscribe(*todo)
            replies = len(todo)
            while replies:
                for reply in await pubsub.read():
                    if reply[0] == b"subscribe":
                        replies -= 1
                    else:
                        self._handle(reply)
            done |= todo
        if stale := done - self._channels - {keys.CONTROL_CHANNEL}:
            await pubsub.unsubscribe(*stale)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self.connected = False
        # Nobody waits on a dead connection: the channels are resubscribed on reconnect,
        # and the resync that follows replays what their watchers missed.
        unanswered, self._unanswered = self._unanswered, {}
        for waiting in unanswered.values():
            for answered in waiting:
                if not answered.done():
                    answered.set_result(None)
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    # --- the supervised listener -------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                await self._pump()
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub connection lost: %s", exc)
            except Exception:  # a bug must not leave the replica deaf for good
                log.exception("redis pub/sub reader failed; reconnecting")
            await self._close_pubsub()
            await self._reconnect()

    async def _pump(self) -> None:
        while (pubsub := self._pubsub) is not None:
            for reply in await pubsub.read():
                self._handle(reply)

    async def _watch_health(self) -> None:
        """PING the pub/sub connection every interval; when nothing at all came back since
        the last PING, the connection is dead without knowing it: close it, and the
        listener reconnects and resyncs."""
        while True:
            await asyncio.sleep(self._health_interval_s)
            for name, pubsub in self._listening():
                if pubsub.silent_since_ping():
                    log.warning("redis %s silent for %.0fs", name, self._health_interval_s)
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()
                    break  # the listener reconnects them all
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.ping()

    def _listening(self) -> list[tuple[str, PubSubConnection]]:
        """The connections the listener reads, named for the log."""
        return [] if self._pubsub is None else [("pub/sub connection", self._pubsub)]

    def _handle(self, reply: PubSubReply) -> None:
        if not isinstance(reply, list):
            return  # PING's answer (the health check): arriving was its whole point
        kind = reply[0]
        if kind == b"message":
            self._dispatch(reply[1], reply[2])
        elif kind == b"subscribe":
            channel = reply[1].decode()
            waiting = self._unanswered.get(channel)
            if waiting:
                answered = waiting.pop(0)
                if not waiting:
                    del self._unanswered[channel]  # else one list stays per channel ever followed
                if not answered.done():  # its subscriber may have been cancelled
                    answered.set_result(None)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if self._held is not None and channel != CONTROL:
            self._held.append((channel, data))
            return
        name = channel.decode()
        try:
            if name == keys.CONTROL_CHANNEL:
                if self._on_signal is not None:
                    self._on_signal(data)
            elif self._deliver is not None:
                self._deliver(keys.job_id_of_channel(name), data)
        except Exception:
            log.exception("dispatching a message from %s failed", name)

    async def _reconnect(self) -> None:
        if self._held is None:
            self._held = []
        attempt = 0
        while True:
            await asyncio.sleep(full_jitter(attempt, base=RECONNECT_BASE_S, cap=RECONNECT_CAP_S))
            try:
                await self._connect()
            except (RedisError, OSError) as exc:
                attempt += 1
                log.warning("redis reconnect attempt %d failed: %s", attempt, exc)
                await self._close_pubsub()
                continue
            self.reconnects += 1
            log.info("redis pub/sub reconnected; resubscribed %d channels", len(self._channels))
            if self._resync is not None:
                try:
                    await self._resync()
                except Exception:  # whatever it was, the listener lives on and tries again
                    log.warning("resync after reconnect failed; retrying", exc_info=True)
                    await self._close_pubsub()
                    continue
            held, self._held = self._held or [], None
            for channel, data in held:  # what the replay did not cover; the rest is dropped
                self._dispatch(channel, data)
            return

    # --- Broker ------------------------------------------------------------------------

    @unavailable_on_disconnect
    async def publish(
        self, job_id: str, epoch: str, frames: list[tuple[int, bytes]], *, terminal: bool
    ) -> None:
        """The Redis journal writes frames with its script; this is the plain path (tests,
        tools): no epoch bookkeeping, a stale seq is refused by the Stream's id order."""
        stream = keys.job_history(job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for seq, payload in frames:
                pipe.xadd(
                    stream,
                    {"f": payload},
                    id=f"{seq}-0",
                    maxlen=self._history_max,
                    approximate=False,
                )
            pipe.expire(stream, self._retention_s)
            message = b"\n".join(p for _, p in frames)
            if not self._sharded:
                pipe.publish(keys.job_channel(job_id), message)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError):
                log.warning("frames of job %s refused by history: %s", job_id, result)
            elif isinstance(result, Exception):
                raise result
        if self._sharded:
            await self._spublish(keys.job_channel(job_id), message)

    async def _spublish(self, channel: str, message: bytes) -> None:
        """SPUBLISH on the primary that owns the channel's slot (a Cluster's shard channel)."""
        node = self._redis.get_node_from_key(channel)
        await self._redis.execute_command("SPUBLISH", channel, message, target_nodes=node)

    @unavailable_on_disconnect
    async def history(self, job_id: str, since: int) -> History:
        stream = keys.job_history(job_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrange(stream, "-", "+", count=1)
            pipe.xrange(stream, f"{since + 1}-0", "+")
            first, entries = await pipe.execute()
        if not first:
            return History(frames=[], first_retained=None)
        frames = [(_seq_of(entry_id), fields[b"f"]) for entry_id, fields in entries]
        return History(frames=frames, first_retained=_seq_of(first[0][0]))

    async def subscribe(self, job_id: str) -> None:
        channel = keys.job_channel(job_id)
        self._channels.add(channel)
        if self._pubsub is None:
            return  # reconnecting: the channel is subscribed with the rest, then resync
        answered = asyncio.get_running_loop().create_future()
        self._unanswered.setdefault(channel, []).append(answered)
        with contextlib.suppress(RedisError, OSError):
            # If this fails the connection is gone: the listener notices, which answers
            # every waiter, reconnects (subscribing the channel) and resyncs.
            await self._pubsub.subscribe(channel)
        await answered

    async def unsubscribe(self, job_id: str) -> None:
        channel = keys.job_channel(job_id)
        self._channels.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    @unavailable_on_disconnect
    async def signal(self, payload: bytes) -> None:
        if self._sharded:
            await self._spublish(keys.CONTROL_CHANNEL, payload)
        else:
            await self._redis.publish(keys.CONTROL_CHANNEL, payload)

    async def check(self) -> bool:
        if not self.connected:
            return False
        return bool(await self._redis.ping())


def _seq_of(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])

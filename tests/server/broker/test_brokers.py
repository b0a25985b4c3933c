"""The Broker contract, run against the in-process broker and against a real redis-server."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from delineate.broker.base import Broker
from delineate.broker.redis import RedisBroker
from delineate.redis import keys as keys
from delineate.redis.client import redis_client
from delineate.settings import Settings
from tests.support.brokers import broker_of
from tests.support.proxy import ReplyGate
from tests.support.services import RedisServer

JOB = "2d1b7a1c-4b8e-4c55-9a57-8f0f7e5c0c3a"


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.signals: list[bytes] = []
        self.resyncs = 0
        self.failing_resyncs = 0
        self.changed = asyncio.Event()

    def deliver(self, job_id: str, payload: bytes) -> None:
        self.frames.append((job_id, payload))
        self.changed.set()

    def on_signal(self, payload: bytes) -> None:
        self.signals.append(payload)
        self.changed.set()

    async def resync(self) -> None:
        self.resyncs += 1
        self.changed.set()
        if self.resyncs <= self.failing_resyncs:
            raise RuntimeError("a resync that failed in a way nobody planned for")

    async def wait(self, predicate: object, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def started(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Recorder]]:
    recorder = Recorder()
    async with broker_of(request.param, request, history_max_frames=16) as broker:
        await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
        yield broker, recorder
        await broker.stop()


_published: weakref.WeakKeyDictionary[Broker, int] = weakref.WeakKeyDictionary()


async def publish(
    broker: Broker, n: int, *, terminal_last: bool = False, epoch: str = "e1"
) -> list[int]:
    """``n`` frames, one message each, at the seqs after the last this broker published."""
    seqs = []
    for i in range(n):
        seq = _published[broker] = _published.get(broker, 0) + 1
        await broker.publish(
            JOB, epoch, [(seq, f"frame-{seq}".encode())], terminal=terminal_last and i == n - 1
        )
        seqs.append(seq)
    return seqs


async def test_frames_published_together_are_one_message(
    started: tuple[Broker, Recorder],
) -> None:
    """Several frames go out as one message, a frame per line, and each is in the history."""
    broker, recorder = started
    await broker.subscribe(JOB)
    await broker.publish(JOB, "e1", [(1, b"a"), (2, b"b")], terminal=False)
    await recorder.wait(lambda: len(recorder.frames) == 1)
    assert recorder.frames == [(JOB, b"a\nb")]
    assert (await broker.history(JOB, 0)).frames == [(1, b"a"), (2, b"b")]


async def test_frames_reach_subscribers_only(started: tuple[Broker, Recorder]) -> None:
    """Frames are delivered while subscribed, not before or after."""
    broker, recorder = started
    await publish(broker, 1)
    await broker.subscribe(JOB)
    await publish(broker, 2)
    await recorder.wait(lambda: len(recorder.frames) == 2)
    await broker.unsubscribe(JOB)
    await asyncio.sleep(0.2)  # Redis answers UNSUBSCRIBE on the listener's connection, later
    await publish(broker, 1)
    await asyncio.sleep(0.2)
    assert [p for _, p in recorder.frames] == [b"frame-2", b"frame-3"]
    assert {j for j, _ in recorder.frames} == {JOB}


async def test_history_after_a_seq(started: tuple[Broker, Recorder]) -> None:
    """History returns the frames after `since`, in order, and the oldest retained seq."""
    broker, _ = started
    await publish(broker, 5)
    history = await broker.history(JOB, 2)
    assert history.frames == [(3, b"frame-3"), (4, b"frame-4"), (5, b"frame-5")]
    assert history.first_retained == 1


async def test_history_is_bounded(started: tuple[Broker, Recorder]) -> None:
    """Past the bound the oldest frames go, and first_retained says so."""
    broker, _ = started
    await publish(broker, 20)
    history = await broker.history(JOB, 0)
    assert len(history.frames) == 16
    assert history.first_retained == 5


async def test_history_of_an_unknown_job_is_empty(started: tuple[Broker, Recorder]) -> None:
    """Nothing kept: no frames, no first seq."""
    broker, _ = started
    history = await broker.history("00000000-0000-4000-8000-000000000000", 0)
    assert history.frames == []
    assert history.first_retained is None


async def test_signals_reach_every_replica(started: tuple[Broker, Recorder]) -> None:
    """A signal comes back through on_signal (this replica included)."""
    broker, recorder = started
    await broker.signal(b'{"cancel":1}')
    await recorder.wait(lambda: recorder.signals == [b'{"cancel":1}'])


async def test_redis_listener_survives_a_restart(redis_server: RedisServer) -> None:
    """After redis-server restarts the listener reconnects, resubscribes and asks to resync."""
    recorder = Recorder()
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2)
    broker = RedisBroker(client, history_max_frames=16, retention_s=60)
    await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
    try:
        await broker.subscribe(JOB)
        redis_server.stop()
        await asyncio.sleep(0.3)
        assert not await _healthy(broker)
        redis_server.start()
        await recorder.wait(lambda: recorder.resyncs == 1, timeout=20)
        assert broker.reconnects == 1
        assert await broker.check()
        await publish(broker, 1)
        await recorder.wait(lambda: len(recorder.frames) == 1)
    finally:
        await broker.stop()
        await client.aclose()


async def test_redis_subscribe_returns_once_redis_has_answered(redis_server: RedisServer) -> None:
    """subscribe() waits for Redis's reply, not just for the command to be written: the hub
    reads history right after it on another connection, and Redis orders nothing across
    connections. Here the reply is held back while Redis already has the subscription."""
    recorder = Recorder()
    direct = aioredis.Redis.from_url(redis_server.url)
    async with ReplyGate(redis_server.port) as gate:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{gate.port}/0")
        broker = RedisBroker(client, history_max_frames=16, retention_s=60)
        await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
        try:
            gate.hold()
            subscribing = asyncio.ensure_future(broker.subscribe(JOB))
            async with asyncio.timeout(10):
                while await _subscribers(direct) == 0:  # noqa: ASYNC110 (Redis's state)
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # time enough to return, had it not waited
            assert not subscribing.done()
            gate.release()
            await asyncio.wait_for(subscribing, 10)
            await direct.publish(keys.job_channel(JOB), b"frame-1")
            await recorder.wait(lambda: [p for _, p in recorder.frames] == [b"frame-1"])
        finally:
            gate.release()
            await broker.stop()
            await client.aclose()
            await direct.aclose()


@pytest.mark.parametrize("failing_resyncs", [0, 1])
async def test_redis_listener_resyncs_when_its_connection_is_cut(
    redis_server: RedisServer, failing_resyncs: int
) -> None:
    """A pub/sub connection killed by Redis (CLIENT KILL, a proxy timeout, a failover) is a
    reconnect plus a resync, with the replica's real client. redis-py's own retry would
    reconnect and resubscribe silently, and frames published in the gap would be lost.
    A resync that fails in a way nobody planned for is tried again: the listener does not
    die with it, leaving the replica deaf (seen in a Sentinel chaos run)."""
    recorder = Recorder()
    recorder.failing_resyncs = failing_resyncs
    client = redis_client(Settings(redis_url=redis_server.url))
    broker = RedisBroker(client, history_max_frames=16, retention_s=60)
    await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
    try:
        await broker.subscribe(JOB)
        assert await client.client_kill_filter(_type="pubsub") == 1
        await recorder.wait(lambda: recorder.resyncs == 1 + failing_resyncs)
        assert broker.reconnects == 1 + failing_resyncs
        await publish(broker, 1)
        await recorder.wait(lambda: len(recorder.frames) == 1)
    finally:
        await broker.stop()
        await client.aclose()


async def _subscribers(client: aioredis.Redis) -> int:
    [(_, count)] = await client.pubsub_numsub(keys.job_channel(JOB))
    return int(count)


async def _healthy(broker: Broker) -> bool:
    try:
        return await broker.check()
    except Exception:
        return False


async def test_redis_listener_reconnects_when_its_connection_goes_silent(
    redis_server: RedisServer,
) -> None:
    """A half-open connection (a network cut, a stuck proxy) reports no error: the health
    PING gets nothing back, so the broker drops the connection, reconnects and resyncs. Here
    a proxy holds every reply, then lets them through again."""
    recorder = Recorder()
    async with ReplyGate(redis_server.port) as gate:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{gate.port}/0")
        broker = RedisBroker(client, history_max_frames=16, retention_s=60, health_interval_s=0.2)
        await broker.start(recorder.deliver, recorder.on_signal, recorder.resync)
        try:
            await broker.subscribe(JOB)
            gate.hold()
            async with asyncio.timeout(10):
                while broker.connected:  # noqa: ASYNC110 (the broker's own state)
                    await asyncio.sleep(0.05)
            gate.release()
            await recorder.wait(lambda: recorder.resyncs == 1)
            assert broker.reconnects == 1
            await publish(broker, 1)
            await recorder.wait(lambda: len(recorder.frames) == 1)
            await asyncio.sleep(1)  # several more health checks, answered now
            assert broker.reconnects == 1
        finally:
            gate.release()
            await broker.stop()
            await client.aclose()

"""The parts one replica is made of, built from settings and started/stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from delineate import gc_tuning
from delineate.backoff import full_jitter
from delineate.broker.base import Broker
from delineate.errors import BackendUnavailable
from delineate.http.auth import Authenticator
from delineate.jobs.runner import RunnerConfig
from delineate.jobs.service import JobService
from delineate.jobs.worker import Worker
from delineate.jobstore.base import JobStore
from delineate.journal.base import Journal
from delineate.observability.metrics import LoopLagMonitor, Metrics
from delineate.ops.service import Ops
from delineate.ops.store import OpsStore
from delineate.ratelimit import FixedWindowLimiter, Limiter
from delineate.realtime.admission import ConnectionCap
from delineate.realtime.closing import ClosePacer
from delineate.realtime.draining import Draining
from delineate.realtime.hub import Hub
from delineate.settings import Settings
from delineate.storage.base import Storage

if TYPE_CHECKING:
    import redis.asyncio as aioredis


log = logging.getLogger("delineate")


class Services(msgspec.Struct, kw_only=True):
    settings: Settings
    storage: Storage
    broker: Broker
    store: JobStore
    jobs: JobService
    hub: Hub
    closes: ClosePacer
    """Paces the closes that follow terminal frames (``delineate.realtime.closing``)."""
    metrics: Metrics
    loop_lag: LoopLagMonitor
    connections: ConnectionCap
    auth: Authenticator
    limiter: Limiter
    """The HTTP rate limit's counter (in Redis when REDIS_URL is set, shared by replicas)."""
    ops: Ops
    """This replica's part of the operations dashboard (``delineate.ops``)."""
    draining: Draining = msgspec.field(default_factory=Draining)
    """Set on SIGTERM: event streams end so clients reconnect to another replica."""
    redis: Any = None
    """The shared redis.asyncio client, when REDIS_URL is set."""

    async def drain(self) -> None:
        """SIGTERM, before connections close: end event streams (clients resume elsewhere with
        Last-Event-ID; uvicorn closes WebSockets with 1012) and hand running jobs back to the
        queue at once, so another replica continues them without waiting for a lease."""
        self.draining.set()
        self.closes.flush()
        await self.jobs.stop()

    def health_checks(self, *, dispatcher: bool = False) -> dict[str, Awaitable[bool]]:
        """One check per dependency; the embedded backends have nothing to check but storage.
        ``dispatcher`` adds the queue check (is work taken?) for the embedded backends too."""
        checks: dict[str, Awaitable[bool]] = {"storage": self.storage.check()}
        for part in (self.broker, self.store):
            if part.health_key and part.health_key not in checks:
                checks[part.health_key] = part.check()
        if self.store.health_key or dispatcher:
            checks["queue"] = _answer(self.jobs.dispatching())
        return checks


async def _answer(value: bool) -> bool:
    return value


def build_storage(settings: Settings) -> Storage:
    if settings.uses_s3:
        from delineate.storage.s3 import S3Storage

        return S3Storage(
            bucket=settings.s3_bucket_name,
            region=settings.s3_region,
            endpoint=settings.s3_endpoint,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            force_path_style=settings.s3_force_path_style,
            create_bucket=settings.s3_create_bucket,
            part_size=settings.s3_part_size_mb * 1024 * 1024,
            max_threads=settings.s3_max_threads,
            timeout_s=settings.storage_timeout_s,
        )
    from delineate.storage.local import LocalStorage

    return LocalStorage(
        settings.data_dir,
        secret=settings.url_signing_secret,
        public_base_url=settings.public_base_url,
    )


def build_broker(settings: Settings, client: Any) -> Broker:
    if client is not None:
        from delineate.broker.redis import RedisBroker
        from delineate.broker.redis_sharded import ShardedRedisBroker
        from delineate.redis.client import is_cluster

        kind = ShardedRedisBroker if is_cluster(client) else RedisBroker
        return kind(
            client,
            history_max_frames=settings.history_max_frames,
            retention_s=settings.job_retention_s,
        )
    from delineate.broker.memory import MemoryBroker

    return MemoryBroker(
        history_max_frames=settings.history_max_frames, retention_s=settings.job_retention_s
    )


def build_store(settings: Settings, client: Any) -> JobStore:
    if client is not None:
        from delineate.jobstore.redis import RedisJobStore

        return RedisJobStore(
            client,
            retention_s=settings.job_retention_s,
            lease_ms=settings.job_lease_ms,
            partitions=settings.queue_partitions,
        )
    from delineate.jobstore.memory import MemoryJobStore

    return MemoryJobStore(retention_s=settings.job_retention_s)


def build_journal(
    settings: Settings, client: aioredis.Redis | None, broker: Broker, store: JobStore
) -> Journal:
    if client is not None:
        from delineate.journal.redis import RedisJournal

        return RedisJournal(
            client,
            broker,
            store,
            history_max_frames=settings.history_max_frames,
            retention_s=settings.job_retention_s,
        )
    return Journal(broker, store)


def build_limiter(settings: Settings, client: aioredis.Redis | None) -> Limiter:
    window_s = settings.rate_limit_window_ms / 1000
    if client is not None:
        from delineate.redis.ratelimit import RedisWindowLimiter

        return RedisWindowLimiter(client, settings.rate_limit_max_requests, window_s)
    return FixedWindowLimiter(settings.rate_limit_max_requests, window_s)


def build_ops(settings: Settings, client: aioredis.Redis | None) -> Ops:
    store: OpsStore
    traces = max(settings.ops_spans // 10, 10)
    if client is not None:
        from delineate.ops.redis_store import RedisOpsStore

        store = RedisOpsStore(client, keep=settings.ops_buffer, traces=traces)
    else:
        from delineate.ops.store import MemoryOpsStore

        store = MemoryOpsStore(keep=settings.ops_buffer, traces=traces)
    return Ops(settings, store)


def build(settings: Settings) -> Services:
    client = None
    if settings.redis_url:
        from delineate.redis.client import redis_client

        client = redis_client(settings)
    storage = build_storage(settings)
    broker, store = build_broker(settings, client), build_store(settings, client)
    config = RunnerConfig(
        delay_enabled=settings.download_delay_enabled,
        delay_min_ms=settings.download_delay_min_ms,
        delay_max_ms=settings.download_delay_max_ms,
        url_ttl_s=settings.download_url_ttl_s,
        progress_interval_s=settings.progress_interval_ms / 1000,
        replica_id=settings.replica_id,
        max_attempts=settings.job_max_attempts,
        retry_base_s=settings.job_retry_base_ms / 1000,
        max_bundle_bytes=settings.max_bundle_bytes,
    )
    metrics = Metrics()
    journal = build_journal(settings, client, broker, store)
    worker = Worker(
        storage=storage, journal=journal, config=config,
        concurrency=settings.job_concurrency, metrics=metrics,
    )  # fmt: skip
    jobs = JobService(
        storage=storage,
        journal=journal,
        config=config,
        worker=worker,
        max_active_per_owner=settings.max_active_jobs_per_owner,
    )
    hub = Hub(broker, jobs.snapshot, on_lost=jobs.mark_lost)
    ops = build_ops(settings, client)
    jobs.on_job = ops.on_job
    closes = ClosePacer(settings.close_rate)
    metrics.jobs_running.set_function(lambda: jobs.running)
    metrics.closes_queued.set_function(lambda: len(closes))
    metrics.broker_reconnects.set_function(lambda: getattr(broker, "reconnects", 0))
    return Services(
        settings=settings,
        storage=storage,
        broker=broker,
        store=store,
        jobs=jobs,
        hub=hub,
        closes=closes,
        metrics=metrics,
        loop_lag=LoopLagMonitor(metrics),
        connections=ConnectionCap(settings.max_sockets_per_ip, settings.trusted_proxy_list),
        auth=Authenticator(settings),
        limiter=build_limiter(settings, client),
        ops=ops,
        redis=client,
    )


STARTUP_WAIT_S = 30.0
"""How long a replica that starts while Redis is away (a failover, a restart) keeps trying."""


async def waiting_for_redis(start: Callable[[], Awaitable[None]], what: str) -> None:
    """``start()``, again while Redis does not answer, for up to ``STARTUP_WAIT_S``: a replica
    started in the middle of a failover waits for the new primary instead of exiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_WAIT_S
    attempt = 0
    while True:
        try:
            await start()
            return
        except (RedisError, OSError, BackendUnavailable) as exc:
            if loop.time() >= deadline:
                raise
            log.warning("%s: redis not ready (%s); trying again", what, exc)
        await asyncio.sleep(full_jitter(attempt, base=0.1, cap=2.0))
        attempt += 1


@contextlib.asynccontextmanager
async def running(services: Services) -> AsyncIterator[Services]:
    """Start everything in dependency order; stop in reverse, whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        await services.storage.start()
        stack.push_async_callback(services.storage.stop)
        await waiting_for_redis(services.store.start, "job store")
        stack.push_async_callback(services.store.stop)
        if services.redis is not None:
            from delineate.redis.client import close_client, follow_failovers

            follow_failovers(services.redis)
            stack.push_async_callback(close_client, services.redis)
        await waiting_for_redis(
            lambda: services.broker.start(
                services.hub.deliver, services.jobs.on_signal, services.hub.resync
            ),
            "broker",
        )
        stack.push_async_callback(services.broker.stop)
        await services.jobs.start()
        stack.push_async_callback(services.jobs.stop)
        monitor = asyncio.create_task(services.loop_lag.run(), name="loop-lag")
        stack.callback(monitor.cancel)
        sweeps = asyncio.create_task(
            gc_tuning.sweep_every(services.settings.gc_sweep_interval_s), name="gc-sweep"
        )
        stack.callback(sweeps.cancel)
        audits = asyncio.create_task(
            services.hub.run_audits(services.settings.watch_audit_s), name="watch-audit"
        )
        stack.callback(audits.cancel)
        services.ops.start(services)
        stack.push_async_callback(services.ops.stop)
        yield services

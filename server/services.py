"""The parts one replica is made of, built from settings and started/stopped together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable

import msgspec

from server.broker.base import Broker
from server.jobs.runner import RunnerConfig
from server.jobs.service import JobService
from server.jobstore.base import JobStore
from server.realtime.hub import Hub
from server.settings import Settings
from server.storage.base import Storage


class Services(msgspec.Struct, kw_only=True):
    settings: Settings
    storage: Storage
    broker: Broker
    store: JobStore
    jobs: JobService
    hub: Hub

    def health_checks(self) -> dict[str, Awaitable[bool]]:
        """One check per dependency; the embedded backends have nothing to check but storage."""
        checks: dict[str, Awaitable[bool]] = {"storage": self.storage.check()}
        for part in (self.broker, self.store):
            if part.health_key and part.health_key not in checks:
                checks[part.health_key] = part.check()
        return checks


def build_storage(settings: Settings) -> Storage:
    from server.storage.local import LocalStorage

    return LocalStorage(
        settings.data_dir,
        secret=settings.url_signing_secret,
        public_base_url=settings.public_base_url,
    )


def build_broker(settings: Settings) -> Broker:
    from server.broker.memory import MemoryBroker

    return MemoryBroker(
        history_max_frames=settings.history_max_frames, retention_s=settings.job_retention_s
    )


def build_store(settings: Settings) -> JobStore:
    from server.jobstore.memory import MemoryJobStore

    return MemoryJobStore(retention_s=settings.job_retention_s)


def build(settings: Settings) -> Services:
    storage, broker, store = build_storage(settings), build_broker(settings), build_store(settings)
    config = RunnerConfig(
        delay_enabled=settings.download_delay_enabled,
        delay_min_ms=settings.download_delay_min_ms,
        delay_max_ms=settings.download_delay_max_ms,
        url_ttl_s=settings.download_url_ttl_s,
        progress_interval_s=settings.progress_interval_ms / 1000,
    )
    jobs = JobService(
        storage=storage,
        broker=broker,
        store=store,
        config=config,
        concurrency=settings.job_concurrency,
    )
    hub = Hub(broker, jobs.snapshot)
    return Services(
        settings=settings, storage=storage, broker=broker, store=store, jobs=jobs, hub=hub
    )


@contextlib.asynccontextmanager
async def running(services: Services) -> AsyncIterator[Services]:
    """Start everything in dependency order; stop in reverse, whatever happens."""
    async with contextlib.AsyncExitStack() as stack:
        await services.storage.start()
        stack.push_async_callback(services.storage.stop)
        await services.store.start()
        stack.push_async_callback(services.store.stop)
        await services.broker.start(services.hub.deliver)
        stack.push_async_callback(services.broker.stop)
        await services.jobs.start()
        stack.push_async_callback(services.jobs.stop)
        yield services

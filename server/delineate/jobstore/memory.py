"""In-process job store: records in a dict, the queue an ``asyncio.Queue``."""

from __future__ import annotations

import asyncio

import msgspec

from delineate.jobstore.base import JobStore
from delineate.record import Head, JobRecord, head_of

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(JobRecord).decode


class MemoryJobStore(JobStore):
    name = "memory"

    def __init__(self, *, retention_s: float) -> None:
        self._retention_s = retention_s
        # Records are kept encoded so a caller's later edits never leak into the store,
        # exactly as with a networked store.
        self._records: dict[str, bytes] = {}
        self._keys: dict[tuple[str | None, str], str] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._active: dict[str, set[str]] = {}

    async def stop(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()

    async def create(
        self, record: JobRecord, idempotency_key: str | None, *, scope: str | None = None
    ) -> JobRecord:
        if idempotency_key is not None:
            existing = self._keys.get((scope, idempotency_key))
            if existing is not None and existing in self._records:
                return _decode(self._records[existing])
            self._keys[scope, idempotency_key] = record.job.job_id
        self._records[record.job.job_id] = _encode(record)
        await self.enqueue(record.job.job_id)
        return record

    async def get(self, job_id: str) -> JobRecord | None:
        raw = self._records.get(job_id)
        return None if raw is None else _decode(raw)

    async def head(self, job_id: str) -> Head | None:
        record = await self.get(job_id)
        return None if record is None else head_of(record)

    async def save(self, record: JobRecord) -> None:
        job_id = record.job.job_id
        self._records[job_id] = _encode(record)
        if record.job.status.is_terminal and record.quota:
            await self.release_slot(record.quota, job_id)
        if record.job.status.is_terminal and job_id not in self._expiry:
            loop = asyncio.get_running_loop()
            self._expiry[job_id] = loop.call_later(self._retention_s, self._forget, job_id)

    async def claim_slot(self, quota: str, job_id: str, limit: int) -> bool:
        active = self._active.setdefault(quota, set())
        if len(active) >= limit:
            return False
        active.add(job_id)
        return True

    async def release_slot(self, quota: str, job_id: str) -> None:
        active = self._active.get(quota)
        if active is not None:
            active.discard(job_id)
            if not active:
                del self._active[quota]

    async def enqueue(self, job_id: str) -> None:
        self._queue.put_nowait(job_id)

    async def take(self) -> str:
        return await self._queue.get()

    async def ack(self, job_id: str) -> None:
        self._queue.task_done()

    async def queued(self) -> int:
        return self._queue.qsize()

    def _forget(self, job_id: str) -> None:
        self._expiry.pop(job_id, None)
        self._records.pop(job_id, None)
        self._keys = {k: v for k, v in self._keys.items() if v != job_id}

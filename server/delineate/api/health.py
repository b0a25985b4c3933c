"""Probes and metrics: ``/livez`` (the process answers), ``/readyz`` (it can take traffic),
``/health`` (the original service's dependency report, unchanged) and ``/metrics``.

An orchestrator restarts a replica whose liveness probe fails, so ``/livez`` checks nothing
outside the process: a Redis outage must take replicas out of the load balancer (readiness),
not restart them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from delineate.http.params import services_of
from delineate.http.responses import JSONResponse
from delineate_protocol.schemas import HealthResponse

CHECK_TIMEOUT_S = 2.0
Check = Literal["ok", "error"]


class Liveness(msgspec.Struct):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct):
    status: Literal["ready", "not_ready"]
    draining: bool
    """True after SIGTERM: the replica finishes its work and takes no more."""
    checks: dict[str, Check]
    """storage, redis (with REDIS_URL) and queue (the dispatcher consumes the job queue)."""


async def livez(request: Request) -> Response:
    """The event loop answers: nothing else (a dependency's outage is readiness's business)."""
    return JSONResponse(Liveness())


async def readyz(request: Request) -> Response:
    services = services_of(request)
    checks = await run_checks(services.health_checks(dispatcher=True))
    body = readiness(checks, draining=services.draining.is_set())
    return JSONResponse(body, status_code=200 if body.status == "ready" else 503)


def readiness(checks: dict[str, bool], *, draining: bool) -> Readiness:
    ready = all(checks.values()) and not draining
    return Readiness(
        status="ready" if ready else "not_ready",
        draining=draining,
        checks={name: "ok" if ok else "error" for name, ok in checks.items()},
    )


async def health(request: Request) -> Response:
    """The original service's report: 503 when a dependency fails (draining is not one)."""
    checks = await run_checks(services_of(request).health_checks())
    healthy = all(checks.values())
    body = HealthResponse(
        status="healthy" if healthy else "unhealthy",
        checks={name: ("ok" if ok else "error") for name, ok in checks.items()},
    )
    return JSONResponse(body, status_code=200 if healthy else 503)


async def run_checks(checks: dict[str, Awaitable[bool]]) -> dict[str, bool]:
    results = await asyncio.gather(*(_within_timeout(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


async def _within_timeout(check: Awaitable[bool]) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check
    except Exception:
        return False


async def metrics(request: Request) -> Response:
    """Prometheus text; the queue length is read now (it lives in the job store)."""
    services = services_of(request)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            services.metrics.jobs_queued.set(await services.store.queued())
    return Response(services.metrics.render(), media_type=services.metrics.content_type)

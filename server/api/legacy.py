"""The original service's endpoints, unchanged for its existing clients (shared/CONTRACT.md)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable
from pathlib import Path
from urllib.parse import urljoin

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from server.api.params import services_of
from server.api.responses import JSONResponse, read_body
from server.api.schemas import (
    CheckRequest,
    CheckResponse,
    HealthResponse,
    RootResponse,
    StartRequest,
    StartResponse,
)
from server.errors import StorageError
from server.storage.base import ObjectInfo, Storage
from server.storage.keys import source_key

HEALTH_CHECK_TIMEOUT_S = 2.0


async def root(request: Request) -> Response:
    """The original's JSON greeting; a browser (asking for HTML) gets the page instead."""
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(web_dir() / "index.html", media_type="text/html")
    return JSONResponse(RootResponse(message="Hello Hono!"))


def web_dir() -> Path:
    """The browser page's files: packaged beside the server, or ``web/`` in a checkout."""
    packaged = Path(__file__).resolve().parents[1] / "web"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "web"


async def health(request: Request) -> Response:
    checks = services_of(request).health_checks()
    results = await asyncio.gather(*(_within_timeout(c) for c in checks.values()))
    healthy = all(results)
    body = HealthResponse(
        status="healthy" if healthy else "unhealthy",
        checks={name: ("ok" if ok else "error") for name, ok in zip(checks, results, strict=True)},
    )
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _within_timeout(check: Awaitable[bool]) -> bool:
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            return await check
    except Exception:
        return False


async def head_or_none(storage: Storage, key: str) -> ObjectInfo | None:
    """The contract's rule: any storage error reads as "not available", never a 500."""
    try:
        return await storage.head(key)
    except StorageError:
        return None


async def metrics(request: Request) -> Response:
    """Prometheus text; the queue length is read now (it lives in the job store)."""
    services = services_of(request)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            services.metrics.jobs_queued.set(await services.store.queued())
    body = services.metrics.render()
    services.loop_lag.reset()
    return Response(body, media_type=services.metrics.content_type)


async def check(request: Request) -> Response:
    body = await read_body(request, CheckRequest)
    if request.query_params.get("sentry_test") == "true":
        raise RuntimeError("Sentry test error: POST /v1/download/check?sentry_test=true")
    key = source_key(body.file_id)
    info = await head_or_none(services_of(request).storage, key)
    return JSONResponse(
        CheckResponse(
            file_id=body.file_id,
            available=info is not None,
            s3_key=key if info else None,
            size=info.size if info else None,
        )
    )


async def start(request: Request) -> Response:
    """Deprecated: blocks for the whole simulated download. Use POST /v1/download/initiate."""
    body = await read_body(request, StartRequest)
    services = services_of(request)
    settings = services.settings
    began = time.monotonic()
    if settings.download_delay_enabled:
        low, high = settings.download_delay_min_ms, settings.download_delay_max_ms
        await asyncio.sleep(random.uniform(low, high) / 1000)
    key = source_key(body.file_id)
    info = await head_or_none(services.storage, key)
    url = None
    if info is not None:
        link = await services.storage.presign(key, settings.download_url_ttl_s)
        url = urljoin(str(request.base_url), link.url)
    elapsed = int((time.monotonic() - began) * 1000)
    return JSONResponse(
        StartResponse(
            file_id=body.file_id,
            status="completed" if info else "failed",
            download_url=url,
            size=info.size if info else None,
            processing_time_ms=elapsed,
            message="Download ready" if info else "File not found",
        ),
        headers={"Deprecation": "true", "Link": '</v1/download/initiate>; rel="successor-version"'},
    )

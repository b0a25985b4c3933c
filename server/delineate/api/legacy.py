"""The original service's endpoints, unchanged for its existing clients (shared/CONTRACT.md)."""

from __future__ import annotations

import asyncio
import random
import time

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from delineate.errors import StorageError
from delineate.http.params import absolute_url, services_of, web_dir
from delineate.http.responses import JSONResponse, read_body
from delineate.storage.base import ObjectInfo, Storage
from delineate.storage.keys import source_key
from delineate_protocol.schemas import (
    CheckRequest,
    CheckResponse,
    RootResponse,
    StartRequest,
    StartResponse,
)


async def root(request: Request) -> Response:
    """The original's JSON greeting; a browser (asking for HTML) gets the page instead."""
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(web_dir() / "index.html", media_type="text/html")
    return JSONResponse(RootResponse(message="Hello Hono!"))


async def head_or_none(storage: Storage, key: str) -> ObjectInfo | None:
    """The contract's rule: any storage error reads as "not available", never a 500."""
    try:
        return await storage.head(key)
    except StorageError:
        return None


async def check(request: Request) -> Response:
    body = await read_body(request, CheckRequest, services_of(request).settings)
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
    body = await read_body(request, StartRequest, services_of(request).settings)
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
        url = absolute_url(request, link.url)
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

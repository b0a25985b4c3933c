"""The dashboard's routes: the page at ``/ops``, its data under ``/v1/ops/`` (operators only
when auth is on), and what the browser pages report to (``/telemetry/``, open: a page
reports before anyone signs in, and its spans are checked and capped)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from delineate.errors import BadRequest, Forbidden, UnsupportedMediaType
from delineate.http.auth import principal_of
from delineate.http.params import services_of, web_dir
from delineate.http.responses import JSONResponse
from delineate.ops.service import Ops
from delineate.ops.spans import browser_spans

MAX_EXPORT_BYTES = 256 * 1024
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def _ops(request: Request) -> Ops:
    principal = principal_of(request.scope)
    if principal is not None and not principal.operator:
        raise Forbidden("the operations dashboard needs the operator role (OPERATORS)")
    return services_of(request).ops


async def page(request: Request) -> Response:
    return FileResponse(web_dir() / "ops.html", media_type="text/html")


async def overview(request: Request) -> Response:
    return JSONResponse(await _ops(request).overview())


async def trace(request: Request) -> Response:
    ops = _ops(request)
    trace_id = str(request.path_params["trace_id"]).lower()
    if not _TRACE_ID.match(trace_id):
        raise BadRequest("a trace id is 32 hex digits")
    return JSONResponse(await ops.trace(trace_id))


async def browser_config(request: Request) -> Response:
    return JSONResponse(services_of(request).ops.browser)


async def browser_traces(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("send OTLP/HTTP JSON (Content-Type: application/json)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_EXPORT_BYTES:
            raise BadRequest(f"an export may hold at most {MAX_EXPORT_BYTES} bytes")
    accepted, answer = browser_spans(body)
    services_of(request).ops.add_browser_spans(accepted)
    return JSONResponse(answer)

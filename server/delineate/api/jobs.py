"""The job API: initiate, status, result, redirect, cancel (the long-running-operation pattern)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from delineate.errors import BadRequest, JobStateConflict
from delineate.http.auth import principal_of
from delineate.http.edge import client_ip
from delineate.http.params import absolute_url, job_id_param, public_base, services_of
from delineate.http.responses import JSONResponse, read_body
from delineate.observability import tracing
from delineate_protocol.frames import JobSnapshot, JobStatus
from delineate_protocol.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    InitiateRequest,
    InitiateResponse,
    ResultResponse,
)

_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
POLL_AFTER_S = "2"


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1-255 printable characters without spaces")
    return key


def job_links(request: Request, job_id: str) -> dict[str, str]:
    base = public_base(request)
    ws_base = "ws" + base.removeprefix("http")
    return {
        "status_url": f"{base}/v1/download/status/{job_id}",
        "result_url": f"{base}/v1/download/result/{job_id}",
        "subscribe_url": f"{ws_base}/v1/download/subscribe/{job_id}",
        "stream_url": f"{base}/v1/download/stream/{job_id}",
        "cancel_url": f"{base}/v1/download/cancel/{job_id}",
    }


async def initiate(request: Request) -> Response:
    body = await read_body(request, InitiateRequest, services_of(request).settings)
    file_ids = list(dict.fromkeys(body.file_ids))  # de-duplicate, keep the caller's order
    services = services_of(request)
    principal = principal_of(request.scope)
    owner = principal.owner if principal else None
    record, created = await services.jobs.create(
        file_ids,
        idempotency_key=_idempotency_key(request),
        request_id=getattr(request.state, "request_id", None),
        trace_id=getattr(request.state, "trace_id", None),
        traceparent=tracing.current_traceparent() or request.headers.get("traceparent"),
        owner=owner,
        quota=owner or client_ip(request.scope, services.settings.trusted_proxy_list),
    )
    job = record.job
    links = job_links(request, job.job_id)
    response = InitiateResponse(
        job_id=job.job_id,
        status=job.status,
        total_file_ids=job.total_file_ids,
        created_at=job.created_at,
        **links,
        # Browsers pass it as ?token= to the socket or stream (they cannot set headers there).
        stream_token=services.auth.issue_stream_token(owner).token if owner else None,
    )
    headers = {"Location": links["status_url"], "Retry-After": POLL_AFTER_S}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(response, status_code=202, headers=headers)


async def stream_token(request: Request) -> Response:
    """A short-lived token for WebSocket and SSE URLs (``?token=``), good for nothing else."""
    principal = principal_of(request.scope)
    # Without auth there is nothing to prove; the token is still issued so clients need no
    # special case (the real-time routes then ignore it).
    owner = principal.owner if principal else "anonymous"
    return JSONResponse(services_of(request).auth.issue_stream_token(owner))


async def status(request: Request) -> Response:
    snapshot = await services_of(request).jobs.snapshot(
        job_id_param(request), principal_of(request.scope)
    )
    if snapshot.download_url:
        snapshot.download_url = absolute_url(request, snapshot.download_url)
    headers = {} if snapshot.status.is_terminal else {"Retry-After": POLL_AFTER_S}
    return JSONResponse(snapshot, headers=headers)


async def _completed(request: Request) -> JobSnapshot:
    snapshot = await services_of(request).jobs.snapshot(
        job_id_param(request), principal_of(request.scope)
    )
    if snapshot.status is not JobStatus.COMPLETED or snapshot.download_url is None:
        raise JobStateConflict(
            f"job {snapshot.job_id} is {snapshot.status.value}; "
            "the result exists once it is completed",
            snapshot.status,
        )
    return snapshot


async def result(request: Request) -> Response:
    snapshot = await _completed(request)
    assert snapshot.download_url is not None
    assert snapshot.expires_at is not None
    return JSONResponse(
        ResultResponse(
            job_id=snapshot.job_id,
            status=snapshot.status,
            download_url=absolute_url(request, snapshot.download_url),
            expires_at=snapshot.expires_at,
            size=snapshot.size,
        )
    )


async def redirect(request: Request) -> Response:
    snapshot = await _completed(request)
    assert snapshot.download_url is not None
    return RedirectResponse(absolute_url(request, snapshot.download_url), status_code=302)


async def cancel(request: Request) -> Response:
    snapshot = await services_of(request).jobs.cancel(
        job_id_param(request), principal_of(request.scope)
    )
    return JSONResponse(snapshot)

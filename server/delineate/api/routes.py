"""Every route of the service, with the metadata its OpenAPI entry is generated from.

One table serves both the router and the document, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from delineate.api import asyncapi, files, health, jobs, legacy, openapi
from delineate.http.auth import StreamToken
from delineate.http.params import web_dir
from delineate.ops import api as ops
from delineate.ops.records import BrowserConfig, Overview, Trace
from delineate.ops.spans import ExportRequest, ExportResponse
from delineate.realtime import sse, websocket
from delineate_protocol.frames import AnyFrame, AnyServerMessage, JobSnapshot
from delineate_protocol.schemas import (
    CheckRequest,
    CheckResponse,
    ErrorResponse,
    HealthResponse,
    InitiateRequest,
    InitiateResponse,
    ResultResponse,
    RootResponse,
    StartRequest,
    StartResponse,
)


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    endpoint: Callable[..., Any]
    summary: str
    tag: str
    request: Any = None
    responses: dict[int, Any] = msgspec.field(default_factory=dict)
    description: str = ""
    deprecated: bool = False
    media_type: str = "application/json"
    path_params: tuple[str, ...] = ()
    query: dict[str, str] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    streaming: bool = False
    """A real-time route: accepts a stream token (``?token=``) when auth is on."""


JOB = ("job_id",)
ERRORS_JOB = {400: ErrorResponse, 404: ErrorResponse}

OPERATIONS: list[Operation] = [
    Operation(
        method="GET",
        path="/",
        endpoint=legacy.root,
        summary="Service greeting",
        tag="service",
        responses={200: RootResponse},
    ),
    Operation(
        method="GET",
        path="/health",
        endpoint=health.health,
        summary="Dependency checks (the original service's report)",
        tag="service",
        responses={200: HealthResponse, 503: HealthResponse},
    ),
    Operation(
        method="GET",
        path="/livez",
        endpoint=health.livez,
        summary="Liveness: the process answers (checks no dependency)",
        tag="service",
        description="For the image's HEALTHCHECK and an orchestrator's liveness probe.",
        responses={200: health.Liveness},
    ),
    Operation(
        method="GET",
        path="/readyz",
        endpoint=health.readyz,
        summary="Readiness: storage and Redis answer, the dispatcher consumes, not draining",
        tag="service",
        description="503 while a dependency fails or after SIGTERM: route no traffic here.",
        responses={200: health.Readiness, 503: health.Readiness},
    ),
    Operation(
        method="POST",
        path="/v1/download/check",
        endpoint=legacy.check,
        tag="downloads",
        summary="Is a file available?",
        request=CheckRequest,
        responses={200: CheckResponse, 400: ErrorResponse, 415: ErrorResponse},
        query={"sentry_test": "Exactly `true` raises an intentional error (500)."},
    ),
    Operation(
        method="POST",
        path="/v1/download/start",
        endpoint=legacy.start,
        tag="downloads",
        summary="Blocking download (deprecated)",
        request=StartRequest,
        deprecated=True,
        description="Waits the whole simulated processing time (10-200 s by default) and dies "
        "behind proxies with 60-100 s timeouts. Use POST /v1/download/initiate and follow "
        "the job over WebSocket or SSE instead.",
        responses={200: StartResponse, 400: ErrorResponse, 504: ErrorResponse},
    ),
    Operation(
        method="POST",
        path="/v1/download/initiate",
        endpoint=jobs.initiate,
        tag="jobs",
        summary="Start a download job",
        request=InitiateRequest,
        headers={"Idempotency-Key": "Retrying with the same key returns the same job."},
        responses={
            202: InitiateResponse,
            400: ErrorResponse,
            409: ErrorResponse,
            415: ErrorResponse,
            422: ErrorResponse,
        },
    ),
    Operation(
        method="POST",
        path="/v1/stream-token",
        endpoint=jobs.stream_token,
        tag="realtime",
        summary="A short-lived token for WebSocket and SSE URLs",
        description="Browsers cannot set headers on WebSocket or EventSource. When auth is on, "
        "pass this token as `?token=` on `/v1/ws`, `/v1/download/subscribe/{job_id}` and "
        "`/v1/download/stream/{job_id}`. It expires after STREAM_TOKEN_TTL_S (default 5 "
        "minutes), works for streaming only, and never appears in logs.",
        responses={200: StreamToken},
    ),
    Operation(
        method="GET",
        path="/v1/download/status/{job_id}",
        endpoint=jobs.status,
        tag="jobs",
        summary="Job status (polling fallback)",
        path_params=JOB,
        responses={200: JobSnapshot, **ERRORS_JOB},
    ),
    Operation(
        method="GET",
        path="/v1/download/result/{job_id}",
        endpoint=jobs.result,
        tag="jobs",
        summary="Download link of a completed job",
        path_params=JOB,
        responses={200: ResultResponse, 409: ErrorResponse, **ERRORS_JOB},
    ),
    Operation(
        method="POST",
        path="/v1/download/cancel/{job_id}",
        endpoint=jobs.cancel,
        tag="jobs",
        summary="Cancel a queued or running job",
        path_params=JOB,
        responses={200: JobSnapshot, 409: ErrorResponse, **ERRORS_JOB},
    ),
    Operation(
        method="GET",
        path="/v1/download/stream/{job_id}",
        endpoint=sse.stream,
        tag="realtime",
        summary="Job frames as Server-Sent Events",
        path_params=JOB,
        media_type="text/event-stream",
        description="`id:` is the frame's seq, `event:` its type, `data:` the frame as JSON. "
        "Send `Last-Event-ID` (or `?since=`) to resume after a seq. Ends after the terminal "
        "frame; `: keepalive` comments keep idle proxies from closing the stream.",
        query={"since": "Resume after this seq.", "token": "A stream token (when auth is on)."},
        headers={"Last-Event-ID": "Resume after this seq (sent by EventSource)."},
        streaming=True,
        responses={200: AnyFrame, **ERRORS_JOB},
    ),
    Operation(
        method="GET",
        path="/v1/download/{job_id}",
        endpoint=jobs.redirect,
        tag="jobs",
        summary="Redirect (302) to the bundle of a completed job",
        path_params=JOB,
        responses={302: None, 409: ErrorResponse, **ERRORS_JOB},
    ),
    Operation(
        method="GET",
        path="/openapi.json",
        endpoint=openapi.document,
        tag="service",
        summary="This document",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/openapi",
        endpoint=openapi.document,
        tag="service",
        summary="This document (the original service's path)",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/asyncapi.json",
        endpoint=asyncapi.document,
        tag="service",
        summary="The AsyncAPI 3.0 document of the WebSocket and SSE channels",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/docs",
        endpoint=openapi.docs,
        tag="service",
        summary="Rendered API documentation",
        media_type="text/html",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/metrics",
        endpoint=health.metrics,
        tag="service",
        summary="Prometheus metrics of this replica",
        media_type="text/plain",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/ops",
        endpoint=ops.page,
        tag="ops",
        summary="The operations dashboard (a page; its data needs the operator role)",
        media_type="text/html",
        responses={200: None},
    ),
    Operation(
        method="GET",
        path="/v1/ops/overview",
        endpoint=ops.overview,
        tag="ops",
        summary="Every replica's heartbeat, recent jobs of all owners, recent errors",
        description="With auth on, only callers with the operator role (OPERATORS) may read it.",
        responses={200: Overview, 403: ErrorResponse},
    ),
    Operation(
        method="GET",
        path="/v1/ops/traces/{trace_id}",
        endpoint=ops.trace,
        tag="ops",
        summary="The kept spans of one trace (the dashboard's waterfall)",
        path_params=("trace_id",),
        responses={200: Trace, 400: ErrorResponse, 403: ErrorResponse},
    ),
    Operation(
        method="GET",
        path="/telemetry/config",
        endpoint=ops.browser_config,
        tag="ops",
        summary="Where the browser pages report errors and spans",
        responses={200: BrowserConfig},
    ),
    Operation(
        method="POST",
        path="/telemetry/traces",
        endpoint=ops.browser_traces,
        tag="ops",
        summary="The browser pages' spans (OTLP/HTTP JSON), relayed with the replica's own",
        request=ExportRequest,
        responses={200: ExportResponse, 400: ErrorResponse, 415: ErrorResponse},
    ),
]

WEBSOCKETS = {
    "/v1/download/subscribe/{job_id}": websocket.subscribe_one,
    "/v1/ws": websocket.multiplexed,
}
WEBSOCKET_DOC = (
    "WebSocket endpoints (not expressible in OpenAPI paths; `/asyncapi.json` describes them): "
    "`GET /v1/download/subscribe/{job_id}[?since=EPOCH:SEQ]` upgrades to a socket that sends "
    "a snapshot (or the frames after that position), every "
    "frame, then closes 1000 after the terminal frame. `GET /v1/ws` carries many jobs: send "
    '`{"op":"subscribe","jobId":...,"since":...}`, `{"op":"unsubscribe","jobId":...}` or '
    '`{"op":"ping"}`; the server answers with `ack`, `pong` or `error` messages and the frames '
    "of every subscribed job. The schema `ServerMessage` lists every message a socket carries."
)


ROUTE_TEMPLATES: dict[object, str] = {}
for _op in OPERATIONS:
    ROUTE_TEMPLATES.setdefault(_op.endpoint, _op.path)
ROUTE_TEMPLATES.update({endpoint: path for path, endpoint in WEBSOCKETS.items()})
ROUTE_TEMPLATES[files.download] = "/v1/files/{key}"


def route_of(scope: Scope) -> str:
    """The matched route's template, for metric labels and span names (never the raw path)."""
    endpoint = scope.get("endpoint")
    if isinstance(endpoint, StaticFiles):
        return "/app"
    return ROUTE_TEMPLATES.get(endpoint, "unmatched")


def build_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for op in OPERATIONS:
        # The bare redirect takes only uuid-shaped ids, so `GET /v1/download/check` is a 405.
        path = op.path.replace("/v1/download/{job_id}", "/v1/download/{job_id:uuid}")
        routes.append(Route(path, op.endpoint, methods=[op.method]))
    routes.append(Route("/v1/files/{key:path}", files.download, methods=["GET"]))
    # The browser page (web/): static files, no build step.
    routes.append(Mount("/app", app=StaticFiles(directory=web_dir(), html=True), name="app"))
    return routes


class WebSocketRoutes:
    """WebSocket handshakes straight to their endpoint; everything else to the app.

    Starlette reaches an endpoint through its error and exception middleware and its router,
    and each of them keeps a suspended frame for as long as the endpoint runs: for a socket,
    its whole life (seven frames, about 3 KiB per idle socket). For these routes none of them does
    anything: the error middleware passes WebSockets through, and the endpoints answer
    their own errors with an error message and a close code. So this matches the path with
    Starlette's own ``WebSocketRoute`` (the same path parameters and ``endpoint`` in the
    scope) and hands over the endpoint's awaitable, keeping no frame either. The app's own
    router has no WebSocket routes: any other handshake gets its answer, as Starlette gives
    it for a path it does not know (403).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = [WebSocketRoute(path, endpoint) for path, endpoint in WEBSOCKETS.items()]

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self.app  # what Starlette sets: endpoints read app.state
                    scope.update(child_scope)
                    return route.app(scope, receive, send)
        return self.app(scope, receive, send)


def openapi_document() -> dict[str, Any]:
    return openapi.build(OPERATIONS, extra_schemas=[AnyServerMessage], description=WEBSOCKET_DOC)

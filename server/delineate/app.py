"""The application factory: routes, error handlers, edge middleware and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from delineate import services as services_module
from delineate.api import asyncapi
from delineate.api.routes import WebSocketRoutes, build_routes, openapi_document, route_of
from delineate.errors import DelineateError
from delineate.http.auth import Authenticate
from delineate.http.edge import EdgeHeaders, RateLimit, Timeout
from delineate.http.responses import (
    handle_delineate_error,
    handle_http_exception,
    handle_unexpected,
)
from delineate.observability import sentry, tracing
from delineate.observability.middleware import Telemetry
from delineate.settings import Settings


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ASGI app (``uvicorn --factory delineate.app:create_app`` works too)."""
    return build(settings)[0]


def build(settings: Settings | None = None) -> tuple[ASGIApp, services_module.Services]:
    """The app and the replica's services (the server drains them on SIGTERM)."""
    settings = settings or Settings.from_env()
    if not settings.otel_sdk_disabled:
        exporting = bool(
            settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint
        )
        tracing.setup(exporting, settings.replica_id, keep_spans=settings.ops_spans > 0)
    sentry_on = sentry.setup(
        settings.sentry_dsn,
        settings.replica_id,
        release=settings.sentry_release,
        environment=settings.sentry_environment,
    )
    services = services_module.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services_module.running(services):
            yield
        # After the last job handed back: flush telemetry before the process exits.
        tracing.shutdown()
        sentry.flush()

    app = Starlette(
        routes=build_routes(),
        exception_handlers={
            DelineateError: handle_delineate_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.openapi = openapi_document()
    app.state.asyncapi = asyncapi.build()
    edge: ASGIApp = Timeout(WebSocketRoutes(app), timeout_ms=settings.request_timeout_ms)
    edge = Authenticate(edge, authenticator=services.auth)
    edge = RateLimit(
        edge,
        limit=settings.rate_limit_max_requests,
        window_ms=settings.rate_limit_window_ms,
        limiter=services.limiter,
        trusted_proxies=settings.trusted_proxy_list,
    )
    edge = Telemetry(
        edge,
        metrics=services.metrics,
        route_of=route_of,
        sentry=sentry_on,
        trusted_proxies=settings.trusted_proxy_list,
    )
    cors = None if settings.cors_origins == "*" else settings.cors_origin_list
    return EdgeHeaders(edge, cors_origins=cors), services

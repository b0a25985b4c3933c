"""The application factory: routes, error handlers, edge middleware and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from server import services as services_module
from server.api.responses import handle_delineate_error, handle_http_exception, handle_unexpected
from server.api.routes import build_routes, openapi_document
from server.edge import EdgeHeaders, RateLimit, Timeout
from server.errors import DelineateError
from server.settings import Settings


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings.from_env()
    services = services_module.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services_module.running(services):
            yield

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
    edge: ASGIApp = Timeout(app, timeout_ms=settings.request_timeout_ms)
    edge = RateLimit(
        edge,
        limit=settings.rate_limit_max_requests,
        window_ms=settings.rate_limit_window_ms,
        trusted_proxies=settings.trusted_proxy_list,
    )
    cors = None if settings.cors_origins == "*" else settings.cors_origin_list
    return EdgeHeaders(edge, cors_origins=cors)

"""Per-request telemetry at the edge: the server span, access log, HTTP metrics, id headers.

Runs just inside ``EdgeHeaders`` (which assigns the request id). An incoming ``traceparent``
is honoured; every response carries ``X-Trace-ID``; the ids are put in context so log lines
and Sentry events carry them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from delineate.http.edge import client_ip
from delineate.observability import logs, tracing
from delineate.observability.metrics import Metrics

access_log = logging.getLogger("delineate.access")
RouteOf = Callable[[Scope], str]


@contextlib.contextmanager
def sentry_scope(enabled: bool, tags: dict[str, str]) -> Iterator[None]:
    """Tag Sentry events of this request (a forked scope, so tags never leak between requests)."""
    if not enabled:
        yield
        return
    import sentry_sdk

    with sentry_sdk.isolation_scope() as scope:
        for key, value in tags.items():
            scope.set_tag(key, value)
        yield


class Telemetry:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        route_of: RouteOf,
        sentry: bool,
        trusted_proxies: list[str] | None,
    ) -> None:
        self.app, self.metrics, self.route_of, self.sentry = app, metrics, route_of, sentry
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Started and ended by hand rather than with the context-manager helpers: a socket
        # holds this frame for its whole life, and each suspended generator costs memory.
        span, caller_trace_id = self._start_span(scope, self.trusted_proxies)
        attached = otel_context.attach(trace.set_span_in_context(span))
        trace_id = tracing.current_trace_id() or caller_trace_id or secrets.token_hex(16)
        request_id = scope["state"]["request_id"]
        scope["state"]["trace_id"] = trace_id
        tokens = (
            logs.request_id_var.set(request_id),
            logs.trace_id_var.set(trace_id),
            logs.span_id_var.set(tracing.current_span_id()),
        )
        try:
            if self.sentry:
                with sentry_scope(self.sentry, {"request_id": request_id, "trace_id": trace_id}):
                    await self._serve(scope, receive, send, span, trace_id)
            else:
                await self._serve(scope, receive, send, span, trace_id)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR)
            if scope["type"] == "websocket":  # an HTTP request's status says it (``_record``)
                span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            logs.request_id_var.reset(tokens[0])
            logs.trace_id_var.reset(tokens[1])
            logs.span_id_var.reset(tokens[2])
            otel_context.detach(attached)
            if scope["type"] == "websocket":
                span.update_name(f"WS {self.route_of(scope)}")
            span.end()

    @staticmethod
    def _start_span(scope: Scope, trusted: list[str] | None) -> tuple[trace.Span, str | None]:
        """The request's span, a child of the caller's trace context, and the caller's trace
        id. The headers are read here, not kept in ``__call__``'s frame."""
        headers = Headers(scope=scope)
        span = tracing.tracer().start_span(
            scope.get("method", "WS"),
            context=tracing.extract(headers),
            kind=trace.SpanKind.SERVER,
            # The client as the rate limiter sees it (forwarded only by a trusted proxy).
            attributes={"client.address": client_ip(scope, trusted)},
        )
        return span, tracing.trace_id_of(headers.get("traceparent"))

    def _serve(
        self, scope: Scope, receive: Receive, send: Send, span: trace.Span, trace_id: str
    ) -> Awaitable[None]:
        if scope["type"] == "websocket":
            return self.app(scope, receive, send)  # no frame kept
        return self._serve_http(scope, receive, send, span, trace_id)

    async def _serve_http(
        self, scope: Scope, receive: Receive, send: Send, span: trace.Span, trace_id: str
    ) -> None:
        status = 500
        started = time.perf_counter()

        async def send_with_trace(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-trace-id", trace_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            self._record(scope, status, time.perf_counter() - started, span)

    def _record(self, scope: Scope, status: int, elapsed: float, span: trace.Span) -> None:
        method, route = scope["method"], self.route_of(scope)
        labels = (method, route, str(status))
        self.metrics.http_requests.labels(*labels).inc()
        self.metrics.http_duration.labels(*labels).observe(elapsed)
        span.update_name(f"{method} {route}")
        span.set_attribute("http.request.method", method)
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:  # the semantic conventions: 5xx is the server's error, 4xx is not
            span.set_status(trace.StatusCode.ERROR)
            span.set_attribute("error.type", str(status))
        # The path only: query strings can hold signatures (download links) and tokens.
        access_log.info(
            "%s %s %d",
            method,
            scope["path"],
            status,
            extra={
                "method": method,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

"""ASGI middleware at the HTTP edge: request ids, security and CORS headers, rate limit, timeout.

Pure ASGI (no BaseHTTPMiddleware), so streaming responses pass through untouched. The app
factory wraps the Starlette app with these, outermost first: ``EdgeHeaders`` (so even a
500 carries the headers) -> ``RateLimit`` -> ``Timeout`` -> the app.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from delineate.http.responses import error_body
from delineate.ratelimit import FixedWindowLimiter, Limiter

_PRINTABLE_ID = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"strict-transport-security", b"max-age=15552000; includeSubDomains"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-dns-prefetch-control", b"off"),
    (b"x-permitted-cross-domain-policies", b"none"),
    (b"x-xss-protection", b"0"),
]
ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = (
    "Content-Type, Authorization, X-Request-ID, traceparent, tracestate, "
    "Idempotency-Key, Last-Event-ID"
)
EXPOSE_HEADERS = (
    "X-Request-ID, X-Trace-ID, RateLimit-Policy, RateLimit-Limit, RateLimit-Remaining, "
    "RateLimit-Reset, Retry-After, Location, Idempotent-Replayed"
)


RAW_SEND_KEY = "delineate.raw_send"
"""Where a WebSocket scope keeps the server's own ASGI ``send`` (this is the outermost app)."""


def drop_raw_send(scope: Scope) -> None:
    """The app is done with the connection: the server's protocol holds the scope and the
    send holds the protocol, so left in place every connection would end in a cycle that
    only the cyclic collector frees."""
    scope.pop(RAW_SEND_KEY, None)


def request_id_from(headers: Headers) -> str:
    """The caller's X-Request-ID when it is 1-128 printable characters, else a new uuid4."""
    incoming = headers.get("x-request-id", "")
    return incoming if _PRINTABLE_ID.match(incoming) else str(uuid.uuid4())


def client_ip(scope: Scope, trusted: list[str] | None = None) -> str:
    """First X-Forwarded-For entry, else X-Real-IP, else the peer address (the contract's rule);
    the forwarding headers count only when the peer is a trusted proxy (None: any peer)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if trusted is not None and peer not in trusted:
        return peer
    headers = Headers(scope=scope)
    forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
    if forwarded:
        return forwarded
    real = headers.get("x-real-ip", "").strip()
    return real or peer


async def send_error(
    send: Send, status: int, message: str, request_id: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = error_body(status, message, request_id)
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


class EdgeHeaders:
    """Assigns the request id; adds security, CORS and X-Request-ID headers; answers preflights."""

    def __init__(self, app: ASGIApp, *, cors_origins: list[str] | None) -> None:
        self.app = app
        self.cors_origins = cors_origins  # None means "*"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The outermost app, so a coroutine function: servers tell ASGI 3 from ASGI 2 by it.
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The server's own send, for the writes that skip the wrappers below it:
        # realtime.websocket.FrameWriter and realtime.sse.EventStream.
        scope[RAW_SEND_KEY] = send
        if scope["type"] == "websocket":
            # No local holds the headers: this frame lasts as long as the socket.
            scope.setdefault("state", {})["request_id"] = request_id_from(Headers(scope=scope))
            try:
                await self.app(scope, receive, send)
            finally:
                drop_raw_send(scope)
            return
        try:
            await self._http(scope, receive, send)
        finally:
            drop_raw_send(scope)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [(b"x-request-id", request_id.encode()), *SECURITY_HEADERS, *self._cors(headers)]
        if scope["method"] == "OPTIONS":
            await self._preflight(send, extra)
            return

        responded = False

        async def send_with_headers(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                message.setdefault("headers", [])
                out = MutableHeaders(scope=message)
                for name, value in extra:
                    out.append(name.decode(), value.decode())
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Starlette re-raises after its 500 handler answered (and logged); letting it
            # reach uvicorn would only drop the keep-alive connection under the client.
            if not responded:
                raise

    def _cors(self, headers: Headers) -> list[tuple[bytes, bytes]]:
        expose = [(b"access-control-expose-headers", EXPOSE_HEADERS.encode())]
        if self.cors_origins is None:
            return [(b"access-control-allow-origin", b"*"), *expose]
        origin = headers.get("origin")
        if origin and origin in self.cors_origins:
            return [
                (b"access-control-allow-origin", origin.encode()),
                (b"vary", b"Origin"),
                *expose,
            ]
        return [(b"vary", b"Origin")]

    async def _preflight(self, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [
            *extra,
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", b"86400"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


class RateLimit:
    """The original's fixed-window limit per client; RateLimit-* headers on every response."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        window_ms: int,
        limiter: Limiter | None = None,
        trusted_proxies: list[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.limiter = limiter or FixedWindowLimiter(limit, window_ms / 1000)
        self.policy = f"{limit};w={window_ms // 1000}".encode()
        self._clock = clock

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            return self.app(scope, receive, send)  # no frame kept (see auth.Authenticate)
        return self._limit(scope, receive, send)

    async def _limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        decision = await self.limiter.hit(client_ip(scope, self.trusted_proxies), self._clock())
        headers = [
            (b"ratelimit-policy", self.policy),
            (b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_s).encode()),
        ]
        if not decision.allowed:
            retry = [(b"retry-after", str(decision.reset_s).encode())]
            message = "too many requests; retry after the window resets"
            await send_error(send, 429, message, scope["state"]["request_id"], headers + retry)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Timeout:
    """504 when a request has not started its response within REQUEST_TIMEOUT_MS.

    Streams (SSE, downloads) start their response at once, so they are never cut off.
    """

    def __init__(self, app: ASGIApp, *, timeout_ms: int) -> None:
        self.app = app
        self.timeout_s = timeout_ms / 1000

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)  # no frame kept (see auth.Authenticate)
        return self._timed(scope, receive, send)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A deadline on the request's own task, lifted once the response starts: a task of
        # its own per request would live as long as an event stream does.
        deadline = asyncio.timeout(self.timeout_s)
        started = False

        async def watch_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not deadline.expired():  # (an app that swallowed the cancel may be late)
                    deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, watch_start)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own
        if started or not deadline.expired():
            return
        message = f"the request took longer than {int(self.timeout_s * 1000)} ms"
        await send_error(send, 504, message, scope["state"]["request_id"], [])

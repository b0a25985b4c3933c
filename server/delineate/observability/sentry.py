"""Error reports to Sentry when SENTRY_DSN is set; nothing is sent (or loaded) otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from delineate.observability.logs import redact
from delineate.observability.tracing import VERSION

_enabled = False
EventListener = Callable[[dict[str, Any]], None]
_listeners: list[EventListener] = []


def setup(dsn: str | None, replica_id: str, *, release: str = "", environment: str = "") -> bool:
    """Capture unhandled errors of requests (Starlette) and of background tasks (asyncio).
    ``release`` and ``environment`` come from SENTRY_RELEASE and SENTRY_ENVIRONMENT."""
    global _enabled
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    sentry_sdk.init(
        dsn=dsn,
        release=release or f"delineate@{VERSION}",
        environment=environment or None,
        server_name=replica_id,
        send_default_pii=False,
        before_send=scrub,
        traces_sample_rate=0.0,
        integrations=[
            StarletteIntegration(),
            AsyncioIntegration(),
            # Errors are captured explicitly with their tags; log lines stay breadcrumbs.
            LoggingIntegration(event_level=None),
        ],
    )
    _enabled = True
    return True


def scrub(event: Any, hint: Any) -> Any:
    """Blank credentials in the request's query string (stream tokens, link signatures);
    tell the listeners the event's id (the dashboard links errors to it)."""
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("query_string", "url"):
            if isinstance(request.get(field), str):
                request[field] = redact(request[field])
    for listener in _listeners:
        listener(event)
    return event


def on_event(listener: EventListener) -> Callable[[], None]:
    """Call ``listener`` with every event sent to Sentry; returns the undo."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def capture_job_error(exc: BaseException, tags: dict[str, str | None]) -> None:
    """Report a background job's crash, which happens outside any request."""
    if not _enabled:
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            if value:
                scope.set_tag(key, value)
        sentry_sdk.capture_exception(exc)


def flush() -> None:
    if _enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=2)

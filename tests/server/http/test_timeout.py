"""REQUEST_TIMEOUT_MS (``http.edge.Timeout``): a deadline on the request's own task until its
response starts. Plain ASGI apps, called directly: this is the middleware's own logic."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from delineate.http.edge import Timeout

Message = dict[str, Any]


async def call(app: Any) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "state": {"request_id": "r1"}}
    await Timeout(app, timeout_ms=50)(scope, receive, send)
    return sent


async def start(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_a_request_that_starts_no_response_in_time_gets_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    sent = await call(slow)
    assert sent[0]["status"] == 504


async def test_a_started_response_outlives_the_deadline() -> None:
    """A stream starts at once, then goes on past REQUEST_TIMEOUT_MS."""

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"done", "more_body": False})

    sent = await call(stream)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"done"]


async def test_an_app_that_swallows_the_cancel_and_answers_late_is_not_broken() -> None:
    """Some code catches CancelledError (a library's own timeout race): its late answer goes
    out as it is, rather than the middleware failing on a deadline already expiring."""

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await start(send, 200)

    sent = await call(stubborn)
    assert sent[0]["status"] == 200
    assert len(sent) == 2


async def test_the_apps_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise TimeoutError("the app's own")

    with pytest.raises(TimeoutError, match="the app's own"):
        await call(failing)

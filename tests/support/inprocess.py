"""An ASGI app in a real uvicorn in the test's own event loop, on an ephemeral loopback port:
for tests that look inside the server while it serves (its tasks, its services)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import uvicorn

from delineate.app import build
from delineate.services import Services
from delineate.settings import Settings
from delineate.uvicorn_ext.sockets import LeanWebSocketProtocol
from tests.support.processes import free_port


@contextlib.asynccontextmanager
async def serving(
    app: Any,
    *,
    deflate: bool = False,
    ws: Any = "websockets-sansio",
    http: Any = "httptools",
    lifespan: str = "off",
) -> AsyncIterator[str]:
    """``app`` served until the block ends; yields its ``ws://`` base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, ws=ws, http=http, lifespan=lifespan,
        ws_per_message_deflate=deflate, log_level="warning", ws_ping_interval=0.05,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110  (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class InProcessApp(msgspec.Struct, frozen=True):
    ws_url: str
    """``ws://127.0.0.1:PORT/``"""
    http: httpx.AsyncClient
    services: Services

    async def initiate(self, file_ids: list[int]) -> str:
        """Start a job; its id."""
        reply = await self.http.post("/v1/download/initiate", json={"file_ids": file_ids})
        assert reply.status_code == 202, reply.text
        return str(reply.json()["jobId"])


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[InProcessApp]:
    """The real app (the server's own uvicorn protocol, lifespan on) built from ``settings``."""
    app, services = build(settings)
    protocol = LeanWebSocketProtocol.closing_within(settings.close_deadline_s)
    async with serving(app, ws=protocol, lifespan="on") as ws_url:
        base = ws_url.replace("ws://", "http://").rstrip("/")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            yield InProcessApp(ws_url, http, services)

"""encode/broadcaster + Starlette: one broadcaster subscription per socket, Redis pub/sub.

Clients open ``/ws/{channel}`` and receive each frame as a text message.
Run: uvicorn bench.reference.broadcaster_server:app
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bench.reference.publisher import health, publish_endpoint

broadcast = Broadcast(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


async def follow(ws: WebSocket) -> None:
    await ws.accept()
    channel = ws.path_params["channel"]

    async def until_closed() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    async with broadcast.subscribe(channel=channel) as subscriber:

        async def forward() -> None:
            async for event in subscriber:
                await ws.send_text(event.message)
                if '"type":"completed"' in event.message:
                    await ws.close()
                    return

        # Whichever ends first ends the other: a socket its client closed must not keep a
        # handler (and its subscription) waiting for a frame that may never come.
        tasks = [asyncio.ensure_future(forward()), asyncio.ensure_future(until_closed())]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()


async def send(channel: str, text: str) -> None:
    await broadcast.publish(channel=channel, message=text)


async def hold_listener_open(listening: asyncio.Event, stop: asyncio.Event) -> None:
    """Keep broadcaster's Redis listener running for the app's life.

    Its listener starts on a subscribe and stops for good if it looks before Redis has
    confirmed the SUBSCRIBE (no channels yet): a handful of sockets that all subscribe in
    that moment then never hear a frame. The usual workaround: hold one subscription of
    our own, retried on a fresh channel until a message comes back through it.
    """
    for attempt in range(50):
        channel = f"__listener-{os.getpid()}-{attempt}"
        async with broadcast.subscribe(channel=channel) as subscriber:
            await broadcast.publish(channel=channel, message="ping")
            try:
                async with asyncio.timeout(0.5):
                    await anext(aiter(subscriber))
            except TimeoutError:
                continue
            listening.set()
            await stop.wait()
            return
    raise RuntimeError("broadcaster's Redis listener never started")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    listening, stop = asyncio.Event(), asyncio.Event()
    holder = asyncio.ensure_future(hold_listener_open(listening, stop))
    ready = asyncio.ensure_future(listening.wait())
    await asyncio.wait([holder, ready], return_when=asyncio.FIRST_COMPLETED)
    if holder.done():
        holder.result()  # raises: the server must not start deaf
    yield
    stop.set()
    await holder
    await broadcast.disconnect()


app = Starlette(
    routes=[
        WebSocketRoute("/ws/{channel}", follow),
        Route("/publish", publish_endpoint(send), methods=["POST"]),
        Route("/health", health),
    ],
    lifespan=lifespan,
)

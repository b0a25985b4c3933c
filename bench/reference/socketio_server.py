"""python-socketio with AsyncRedisManager: rooms per channel, fan-out through Redis pub/sub.

Clients speak Engine.IO 4 over WebSocket and ``emit("join", channel)``; frames arrive as
``42["frame","<json>"]``.  Run: uvicorn bench.reference.socketio_server:app
"""

from __future__ import annotations

import os

import socketio
from starlette.applications import Starlette
from starlette.routing import Route

from bench.reference.publisher import health, publish_endpoint

manager = socketio.AsyncRedisManager(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
sio = socketio.AsyncServer(
    async_mode="asgi", client_manager=manager, cors_allowed_origins="*", transports=["websocket"]
)


@sio.event
async def join(sid: str, channel: str) -> bool:
    await sio.enter_room(sid, channel)
    return True  # the ack tells the client it is in the room


async def send(channel: str, text: str) -> None:
    await sio.emit("frame", text, room=channel)


routes = [
    Route("/publish", publish_endpoint(send), methods=["POST"]),
    Route("/health", health),
]
app = socketio.ASGIApp(sio, other_asgi_app=Starlette(routes=routes))

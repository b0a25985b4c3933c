"""What the reference servers publish: Delineate-shaped progress frames on a schedule.

Each channel gets ``rate`` frames per second for ``seconds`` (seq 1, 2, ...), then one
``completed`` frame, each with ``ts`` (epoch ms) so the load client measures the same latency
it measures for Delineate. Channels start staggered across one interval, as jobs do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Send = Callable[[str, str], Awaitable[None]]


def frame(channel: str, seq: int, steps: int) -> str:
    done = seq >= steps
    body = {
        "type": "completed" if done else "progress",
        "jobId": channel,
        "seq": seq,
        "ts": time.time() * 1000,
        "progress": round(100 * seq / steps, 1),
        "bytesDone": seq * 26_214,
        "bytesTotal": steps * 26_214,
        "filesDone": 0,
        "traceId": "0" * 32,
    }
    return json.dumps(body, separators=(",", ":"))


async def publish_channel(
    send: Send, channel: str, rate: float, seconds: float, offset: float
) -> None:
    steps = max(1, int(rate * seconds))
    start = time.monotonic() + offset
    for seq in range(1, steps + 2):  # the last one is the terminal frame
        await asyncio.sleep(max(0.0, start + (seq - 1) / rate - time.monotonic()))
        await send(channel, frame(channel, seq, steps + 1))


def publish_endpoint(send: Send) -> Callable[[Request], Awaitable[Response]]:
    """POST /publish {"channels": [...], "rate": 2, "seconds": 20}: start publishing, answer 202."""
    tasks: set[asyncio.Task[None]] = set()

    async def publish(request: Request) -> Response:
        body = await request.json()
        channels, rate, seconds = body["channels"], float(body["rate"]), float(body["seconds"])
        for i, channel in enumerate(channels):
            offset = i / max(1, len(channels)) / rate
            task = asyncio.ensure_future(publish_channel(send, channel, rate, seconds, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return JSONResponse({"channels": len(channels)}, status_code=202)

    return publish


async def health(request: Request) -> Response:
    return JSONResponse({"status": "healthy"})

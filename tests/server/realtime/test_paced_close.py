"""When a job ends, every follower gets its terminal frame at once and the closes follow on
their turns (``delineate.realtime.closing``): the real app, in a real uvicorn in this process,
with CLOSE_RATE=1 (one close a second) so the order is plain to see."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from delineate.settings import Settings
from tests.support.inprocess import running_app

TERMINAL = {"completed", "failed", "cancelled"}


def one_close_a_second(tmp_path: Path) -> Settings:
    """One-second jobs; CLOSE_RATE=1, so the paced closes are a second apart."""
    return Settings(
        data_dir=str(tmp_path),
        download_delay_min_ms=1_000,
        download_delay_max_ms=1_000,
        close_rate=1,
    )


async def until_terminal(socket: ClientConnection) -> str:
    async with asyncio.timeout(20):
        while True:
            frame = json.loads(await socket.recv())
            if frame["type"] in TERMINAL:
                return str(frame["type"])


async def sse_until_end(http: httpx.AsyncClient, job_id: str, seen: list[str]) -> None:
    async with http.stream("GET", f"/v1/download/stream/{job_id}") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))
    seen.append("<end>")


async def test_terminal_frames_go_out_together_and_the_closes_follow_one_by_one(
    tmp_path: Path,
) -> None:
    async with running_app(one_close_a_second(tmp_path)) as served:
        job_id = await served.initiate([70000])
        url = f"{served.ws_url}v1/download/subscribe/{job_id}"
        sockets = [await connect(url) for _ in range(3)]
        sse_events: list[str] = []
        sse = asyncio.ensure_future(sse_until_end(served.http, job_id, sse_events))
        try:
            assert await asyncio.gather(*map(until_terminal, sockets)) == ["completed"] * 3
            # Every terminal frame is in; the closes come one a second, so at most the
            # first has come (the old way, each socket's close came with its frame).
            closing = [s for s in sockets if s.state is not State.OPEN]
            assert len(closing) <= 1
            for socket in sockets:
                await asyncio.wait_for(socket.wait_closed(), 20)
                assert (socket.close_code, socket.close_reason) == (1000, "job finished")
            await asyncio.wait_for(sse, 20)
        finally:
            sse.cancel()
            for socket in sockets:
                await socket.close()
    assert sse_events[-2:] == ["completed", "<end>"]
    closes = served.services.closes
    assert closes.paced >= 2  # three sockets and a stream closed, one a second
    assert len(closes) == 0


async def test_clients_that_close_on_the_terminal_frame_are_answered_on_their_turns(
    tmp_path: Path,
) -> None:
    """A client that closes as soon as the terminal frame arrives (the ``websockets``
    library's ``close()``) is not answered at once: after a terminal frame the server leaves
    the socket unread until its paced close, so thousands of clients closing together
    cannot crowd out other jobs' last frames. Each client's handshake ends with the
    server's own close (1000, "job finished"), not an echo of its own."""
    async with running_app(one_close_a_second(tmp_path)) as served:
        job_id = await served.initiate([70000])
        url = f"{served.ws_url}v1/download/subscribe/{job_id}"
        sockets = [await connect(url, close_timeout=20) for _ in range(3)]

        async def close_on_terminal(socket: ClientConnection) -> tuple[int | None, str | None]:
            await until_terminal(socket)
            await socket.close(1000, "client done")
            return socket.close_code, socket.close_reason

        try:
            closes = await asyncio.wait_for(asyncio.gather(*map(close_on_terminal, sockets)), 30)
        finally:
            for socket in sockets:
                await socket.close()
    assert closes == [(1000, "job finished")] * 3
    assert served.services.closes.paced >= 2

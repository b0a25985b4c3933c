"""A socket's writer task lives only while messages wait: the real app, in a real uvicorn in
this process, so its tasks can be counted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from delineate.settings import Settings
from tests.support.inprocess import running_app


def writers() -> int:
    """The connection writer tasks running in this loop."""
    return sum(
        1
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith("Session._write")
    )


async def next_message(socket: ClientConnection) -> dict[str, object]:
    async with asyncio.timeout(10):
        message: dict[str, object] = json.loads(await socket.recv())
    return message


async def test_writers_end_once_the_queue_is_sent_and_start_again_when_needed(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=str(tmp_path),
        download_delay_min_ms=60_000,
        download_delay_max_ms=60_000,
        progress_interval_ms=200,
    )
    async with running_app(settings) as served:
        ws_url = served.ws_url
        job_id = await served.initiate([70000, 70007])
        # Each resumes from seq 0: its replay is queued before its session runs, so each
        # starts a writer.
        sockets = [
            await connect(f"{ws_url}v1/download/subscribe/{job_id}?since=0") for _ in range(10)
        ]
        mux = await connect(f"{ws_url}v1/ws")
        try:
            for socket in sockets:
                assert (await next_message(socket))["seq"] == 1
            # Replays sent: no writer is left behind, and live frames still come (directly).
            await asyncio.sleep(0.1)
            assert writers() == 0
            seqs = {(await next_message(s))["seq"] for s in sockets for _ in range(3)}
            assert max(seqs) > 1

            # A multiplexed socket's ack and snapshot wait in its outbox: a writer sends
            # them and ends; the next subscribe starts another.
            for round in range(2):
                await mux.send(json.dumps({"op": "subscribe", "jobId": job_id}))
                assert (await next_message(mux))["type"] == "ack"
                assert (await next_message(mux))["type"] == "snapshot"
                await mux.send(json.dumps({"op": "unsubscribe", "jobId": job_id}))
                assert (await next_message(mux))["type"] == "ack"
                await asyncio.sleep(0.1)
                assert writers() == 0, f"round {round}"
        finally:
            for socket in [*sockets, mux]:
                await socket.close()

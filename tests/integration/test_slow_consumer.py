"""A client that stops reading never slows the job, the other clients, or the replica.

One replica on real Redis; 1,000 well-behaved sockets follow four jobs while one more socket
stops reading and keeps asking for big snapshots. The stalled socket is closed with 1013
(its outbox stays bounded), resumes with ``since`` and still gets every frame; everyone else
gets every frame once, in order; the replica's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Cluster
from tests.support.clients import AVAILABLE, initiate, seqs

pytestmark = pytest.mark.integration

WATCHERS = 1000
JOBS = 4
BIG_JOB_FILES = list(range(70_000, 71_000))  # a 1,000-file snapshot is ~70 KB
TERMINAL = {"completed", "failed", "cancelled"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def follow(url: str, job_id: str, ready: asyncio.Event, count: list[int]) -> list[dict]:
    """A client that keeps up: every frame of one job until its terminal frame."""
    frames: list[dict[str, Any]] = []
    async with connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "jobId": job_id, "since": 0}))
        count[0] += 1
        if count[0] == WATCHERS:
            ready.set()
        async for raw in ws:
            message = json.loads(raw)
            if message.get("jobId") == job_id and "seq" in message:
                frames.append(message)
                if message["type"] in TERMINAL:
                    return frames
    return frames


def small_buffer_socket(port: int) -> socket.socket:
    """A client socket with a 16 KiB receive buffer, so a stall shows quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    return sock


async def stall(ws: ClientConnection, big_job: str, pairs: int = 400) -> int:
    """Never read; ask for the big job's snapshot again and again. Returns ops sent before the
    server stopped taking them (it closed the session)."""
    sent = 0
    for _ in range(pairs):
        try:
            async with asyncio.timeout(3):
                await ws.send(json.dumps({"op": "subscribe", "jobId": big_job}))
                await ws.send(json.dumps({"op": "unsubscribe", "jobId": big_job}))
        except (TimeoutError, ConnectionClosed):
            break
        sent += 1
    return sent


async def test_a_stalled_client_is_closed_and_nobody_else_notices(cluster: Cluster) -> None:
    (replica,) = cluster(
        1,
        OUTBOX_LIMIT="64",  # more than a job's whole history: followers never coalesce
        MAX_BUNDLE_BYTES="0",  # no size check of the 1,000-file job at initiate
        SLOW_CONSUMER_DEADLINE_S="2",
        MAX_SOCKETS_PER_IP=str(WATCHERS + 50),
        PROGRESS_INTERVAL_MS="250",
        DOWNLOAD_DELAY_MIN_MS="4000",
        DOWNLOAD_DELAY_MAX_MS="4000",
    )
    assert replica.pid is not None
    url = f"{replica.ws_url}/v1/ws"
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        # The big job only has to exist (its snapshot is what the stalled client asks for).
        big_job = (await initiate(http, BIG_JOB_FILES))["jobId"]
        await http.post(f"/v1/download/cancel/{big_job}")
        jobs = [(await initiate(http, AVAILABLE))["jobId"] for _ in range(JOBS)]

        ready, count = asyncio.Event(), [0]
        watchers = [
            asyncio.ensure_future(follow(url, jobs[i % JOBS], ready, count))
            for i in range(WATCHERS)
        ]
        async with asyncio.timeout(60):
            await ready.wait()
        rss_before = rss_kib(replica.pid)

        stalled = await connect(
            url, sock=small_buffer_socket(replica.port), max_queue=1, ping_interval=None
        )
        await stalled.send(json.dumps({"op": "subscribe", "jobId": jobs[0], "since": 0}))
        sent = await stall(stalled, big_job)
        await asyncio.sleep(3)  # past the deadline, still not reading
        rss_during = rss_kib(replica.pid)

        # The stalled client reads at last: what was buffered, then the close.
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            try:
                async for raw in stalled:
                    seen.append(json.loads(raw))
            except ConnectionClosed:
                pass
        assert stalled.close_code == 1013, (stalled.close_code, stalled.close_reason, sent)
        assert "slow consumer" in (stalled.close_reason or "")
        big_snapshots = sum(
            1 for f in seen if f.get("type") == "snapshot" and f["jobId"] == big_job
        )
        assert big_snapshots < sent, "the server dropped the session instead of buffering it all"

        # Everyone else: every frame once, in order, to the terminal frame.
        async with asyncio.timeout(90):
            results = await asyncio.gather(*watchers)
        for frames in results:
            numbers = seqs(frames)
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), "a gap or a repeat"
            assert frames[-1]["type"] == "completed"

        # ... and resumes with since: the rest of the job, nothing twice.
        own = [f for f in seen if f.get("jobId") == jobs[0] and "seq" in f]
        last = own[-1]["seq"] if own else 0
        async with connect(url) as again:
            await again.send(json.dumps({"op": "subscribe", "jobId": jobs[0], "since": last}))
            rest = []
            async with asyncio.timeout(30):
                async for raw in again:
                    message = json.loads(raw)
                    if message.get("type") == "ack":
                        continue
                    rest.append(message)
                    if message["type"] in TERMINAL:
                        break
        assert rest[-1]["type"] == "completed"
        assert all(f["seq"] > last for f in rest)

        # Bounded: at most the outbox's hard limit of snapshots, not the whole flood.
        grown_kib = rss_during - rss_before
        assert grown_kib < 64 * 1024, f"replica grew {grown_kib} KiB while stalled"
        assert (await http.get("/health")).status_code == 200
        metrics = (await http.get("/metrics")).text
        assert 'delineate_slow_consumer_total{action="disconnected"} 1.0' in metrics

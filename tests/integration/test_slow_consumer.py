"""A client that stops reading never slows the job, the other clients, or the replica.

One replica on real Redis; 1,000 well-behaved sockets follow four jobs while one more socket
stops reading and keeps asking for big snapshots. The stalled socket is closed with 1013
(its outbox stays bounded), resumes with ``since`` and still gets every frame; everyone else
gets every frame once, in order; the replica's memory stays bounded.

Clients that never read again (WebSocket and SSE) are not only counted as gone: their
sockets are reset at CLOSE_DEADLINE_S, and what they held (kernel send queue, per-address
slot, connection gauge) is freed with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import Cluster
from tests.support.clients import AVAILABLE, initiate, seqs
from tests.support.sockets import server_sockets, small_buffer_socket

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
        CLOSE_DEADLINE_S="30",  # the stalled client reads again within it
        PROGRESS_INTERVAL_MS="250",
        # Long enough that jobs[0] is still running when the stalled client is closed (it
        # resumes from there); 4 s jobs ended first on a loaded box, leaving nothing to resume.
        DOWNLOAD_DELAY_MIN_MS="8000",
        DOWNLOAD_DELAY_MAX_MS="8000",
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


STALLED_WS = 3
STALLED_SSE = 3
CAP = STALLED_WS + STALLED_SSE


def stalled_stream(port: int, job_id: str) -> socket.socket:
    """An SSE request from a client that never reads a byte of the answer."""
    sock = small_buffer_socket(port)
    request = f"GET /v1/download/stream/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def gauge(metrics: str, transport: str) -> float:
    prefix = f'delineate_open_connections{{transport="{transport}"}} '
    values = [
        float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)
    ]
    return values[0] if values else 0.0


async def admitted(url: str, job_id: str) -> ClientConnection | int:
    """A socket from this address: open and following ``job_id`` (acked), or its close code."""
    ws = await connect(url, ping_interval=None)
    try:
        await ws.send(json.dumps({"op": "subscribe", "jobId": job_id}))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv())["type"] != "ack":
                pass
    except ConnectionClosed:
        await ws.close()
        return ws.close_code or 0
    return ws


async def sample_send_queues(pid: int, port: int, peers: set[int], held: dict[int, int]) -> None:
    """The most each of the replica's sockets to ``peers`` held unsent, sampled until
    cancelled (at most a minute)."""
    for _ in range(600):
        for peer, (_, queued) in server_sockets(port, peers, pid).items():
            held[peer] = max(held.get(peer, 0), queued)
        await asyncio.sleep(0.1)


async def test_clients_that_never_read_again_are_reset_and_free_what_they_held(
    cluster: Cluster,
) -> None:
    """WebSocket (1013 on overflow) and SSE (the end of the stream) clients that stop reading
    for good: within the close deadline the replica's side of each socket is gone from the
    kernel, with the send queue it pinned; the address's connection cap admits as many as
    before; the connection gauge agrees."""
    (replica,) = cluster(
        1,
        OUTBOX_LIMIT="8",
        MAX_BUNDLE_BYTES="0",
        SLOW_CONSUMER_DEADLINE_S="1",
        CLOSE_DEADLINE_S="2",
        MAX_SOCKETS_PER_IP=str(CAP),
        DOWNLOAD_DELAY_MIN_MS="20000",
        DOWNLOAD_DELAY_MAX_MS="20000",
    )
    assert replica.pid is not None
    url = f"{replica.ws_url}/v1/ws"
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        big_job = (await initiate(http, BIG_JOB_FILES))["jobId"]
        # SSE: follow a running job (a 70 KB snapshot) and never read; the job then ends.
        streams = [stalled_stream(replica.port, big_job) for _ in range(STALLED_SSE)]
        # WebSocket: ask for that snapshot again and again until the outbox overflows.
        ws_socks = [small_buffer_socket(replica.port) for _ in range(STALLED_WS)]
        peers = {sock.getsockname()[1] for sock in [*streams, *ws_socks]}
        held: dict[int, int] = {}
        sampler = asyncio.ensure_future(sample_send_queues(replica.pid, replica.port, peers, held))
        stalled = [
            await connect(url, sock=sock, max_queue=1, ping_interval=None) for sock in ws_socks
        ]
        await asyncio.gather(*(stall(ws, big_job, pairs=200) for ws in stalled))
        await http.post(f"/v1/download/cancel/{big_job}")

        remaining = server_sockets(replica.port, peers, replica.pid)
        for _ in range(100):  # the deadlines are 1 + 2 s; this waits up to 20 s
            remaining = server_sockets(replica.port, peers, replica.pid)
            if not remaining:
                break
            await asyncio.sleep(0.2)
        sampler.cancel()
        assert remaining == {}, f"the replica still holds the stalled clients: {remaining}"
        # (They did stall: every one of those sockets had data its client never took.)
        assert len(held) == CAP, held
        assert min(held.values()) > 0, held
        assert sum(held.values()) > STALLED_WS * 1024 * 1024, held

        # Their slots went with them: the address has its whole cap again, and no more.
        open_now = [await admitted(url, big_job) for _ in range(CAP)]
        assert all(isinstance(ws, ClientConnection) for ws in open_now), open_now
        assert await admitted(url, big_job) == 1013
        metrics = (await http.get("/metrics")).text
        assert gauge(metrics, "websocket") == CAP
        assert gauge(metrics, "sse") == 0
        assert 'delineate_slow_consumer_total{action="disconnected"} 3.0' in metrics
        for ws in [*open_now, *stalled]:
            assert isinstance(ws, ClientConnection)
            async with asyncio.timeout(10):
                await ws.close()
    for sock in streams:
        sock.close()


async def test_a_drain_resets_clients_that_never_read_again(cluster: Cluster) -> None:
    """SIGTERM while WebSocket and SSE clients hold megabytes they will never read: the drain
    closes them (1012, the end of the stream), resets them at the close deadline, and the
    replica exits by itself, leaving none of their sockets in the kernel (a plain close, or
    the process's exit, leaves them there, send queue and all)."""
    (replica,) = cluster(
        1,
        MAX_BUNDLE_BYTES="0",
        SLOW_CONSUMER_DEADLINE_S="60",  # no slow-consumer close: the drain is what closes
        CLOSE_DEADLINE_S="2",
        DOWNLOAD_DELAY_MIN_MS="20000",
        DOWNLOAD_DELAY_MAX_MS="20000",
    )
    assert replica.pid is not None
    url = f"{replica.ws_url}/v1/ws"
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        big_job = (await initiate(http, BIG_JOB_FILES))["jobId"]
    streams = [stalled_stream(replica.port, big_job) for _ in range(STALLED_SSE)]
    ws_socks = [small_buffer_socket(replica.port) for _ in range(STALLED_WS)]
    stalled = [await connect(url, sock=sock, max_queue=1, ping_interval=None) for sock in ws_socks]
    # 80 snapshots of 70 KB: more than the socket's buffers take, less than the outbox's cap.
    await asyncio.gather(*(stall(ws, big_job, pairs=80) for ws in stalled))
    peers = {sock.getsockname()[1] for sock in [*streams, *ws_socks]}
    held: dict[int, int] = {}
    sampler = asyncio.ensure_future(sample_send_queues(replica.pid, replica.port, peers, held))
    await asyncio.sleep(2)  # the replica's writers fill what the kernel takes
    sampler.cancel()
    assert len(held) == CAP, held
    assert min(held.values()) > 0, held
    assert sum(held.values()) > 1024 * 1024, held

    await asyncio.to_thread(replica.stop)  # SIGTERM; SIGKILL after 10 s
    assert server_sockets(replica.port, peers) == {}
    assert replica.popen is not None
    # uvicorn re-raises SIGTERM once its shutdown is done; SIGKILL would mean it never was.
    assert replica.popen.returncode in (0, -signal.SIGTERM), replica.popen.returncode
    for ws in stalled:
        with contextlib.suppress(ConnectionClosed, OSError):
            async with asyncio.timeout(10):
                await ws.close()
    for sock in streams:
        sock.close()

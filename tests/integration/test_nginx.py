"""The production edge: real nginx (rendered from nginx/) in front of replicas and real Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from delineate_client import AsyncClient, Backoff
from tests.conftest import Cluster, EdgeFactory, ReplicaFactory
from tests.support.clients import (
    AVAILABLE,
    assert_strictly_increasing,
    initiate,
    seq_of,
    seqs,
    sse_events,
    wait_status,
    ws_collect,
)

pytestmark = pytest.mark.integration

FAST = Backoff(base=0.05, cap=0.5)


async def test_websocket_and_sse_through_nginx(cluster: Cluster, edge_factory: EdgeFactory) -> None:
    """Both transports work through the proxy to 2 replicas with Redis, and SSE frames arrive
    while the job runs."""
    proxy = edge_factory(cluster(2))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        job = await initiate(http, AVAILABLE)
        assert job["subscribeUrl"].startswith(proxy.ws_url)
        early, _ = await sse_events(http, job["streamUrl"], limit=3)
        running = (await http.get(f"/v1/download/status/{job['jobId']}")).json()
        over_ws = await ws_collect(job["subscribeUrl"])
        over_sse, _ = await sse_events(http, job["streamUrl"], headers={"Last-Event-ID": "0"})
    assert running["status"] == "processing"  # the SSE frames were not held back by nginx
    assert any(e["event"] == "progress" for e in early)
    assert over_ws.frames[-1]["type"] == "completed"
    assert over_ws.close_code == 1000
    assert over_sse[-1]["event"] == "completed"
    assert_strictly_increasing([seq_of(e["id"]) for e in over_sse])


async def test_idle_streams_outlive_the_proxy_read_timeout(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory
) -> None:
    """With nginx's read timeout at 2 s, server heartbeats keep idle WS and SSE open for 4 s."""
    replica = replica_factory(
        TRUSTED_PROXIES="127.0.0.1", JOB_CONCURRENCY="1",
        WS_PING_INTERVAL_S="0.5", SSE_KEEPALIVE_S="0.5",
        DOWNLOAD_DELAY_MIN_MS="15000", DOWNLOAD_DELAY_MAX_MS="15000",
    )  # fmt: skip
    proxy = edge_factory([replica], stream_timeout="2s")
    async with connect(f"{proxy.ws_url}/v1/ws") as ws:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 4)  # nothing to say for 4 s, yet still open
        await ws.send('{"op":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 2))["type"] == "pong"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        idle = await _idle_job(http)
        kept = await _sse_lines_for(http, idle["streamUrl"], 4)
    assert kept.count(": keepalive") >= 4
    assert not kept.ended


async def test_a_silent_stream_is_cut_by_the_proxy(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory
) -> None:
    """The control for the test above: without a heartbeat within 2 s, nginx ends the stream."""
    replica = replica_factory(
        TRUSTED_PROXIES="127.0.0.1", SSE_KEEPALIVE_S="30", JOB_CONCURRENCY="1",
        DOWNLOAD_DELAY_MIN_MS="15000", DOWNLOAD_DELAY_MAX_MS="15000",
    )  # fmt: skip
    proxy = edge_factory([replica], stream_timeout="2s")
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        idle = await _idle_job(http)
        cut = await _sse_lines_for(http, idle["streamUrl"], 5)
    assert cut.ended


async def _idle_job(http: httpx.AsyncClient) -> dict[str, Any]:
    """A job that stays queued behind the replica's only worker: its stream is idle."""
    running = await initiate(http, [70000])
    await wait_status(http, running["jobId"], {"processing"})
    return await initiate(http, [70007])


class _Lines(list[str]):
    ended = False


async def _sse_lines_for(http: httpx.AsyncClient, url: str, seconds: float) -> _Lines:
    lines = _Lines()
    try:
        async with asyncio.timeout(seconds), http.stream("GET", url) as response:
            async for line in response.aiter_lines():
                lines.append(line)
            lines.ended = True
    except TimeoutError:
        pass
    except httpx.RemoteProtocolError:
        lines.ended = True
    return lines


async def test_replica_loss_behind_nginx_resumes_without_gaps(
    cluster: Cluster, edge_factory: EdgeFactory
) -> None:
    """Kill a replica mid-job: SDK subscribers reconnect through nginx to the other replica
    and resume with every frame exactly once."""
    replicas = cluster(
        2, JOB_LEASE_MS="1500", DOWNLOAD_DELAY_MIN_MS="4000", DOWNLOAD_DELAY_MAX_MS="4000"
    )
    proxy = edge_factory(replicas)
    async with AsyncClient(proxy.url, backoff=FAST) as client:
        job = await client.initiate(AVAILABLE)
        watchers = [asyncio.ensure_future(_frames(client, job.job_id)) for _ in range(4)]
        running = await client.status(job.job_id)
        while running.worker is None:
            running = await client.status(job.job_id)
        await asyncio.sleep(1.0)
        next(r for r in replicas if r.name == running.worker).kill()
        results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    for frames in results:
        assert_strictly_increasing(seqs(frames))
        assert frames[-1]["type"] == "completed"
        assert [f["type"] for f in frames].count("completed") == 1


async def _frames(client: AsyncClient, job_id: str) -> list[dict[str, object]]:
    import msgspec

    return [msgspec.to_builtins(f) async for f in client.subscribe(job_id)]


async def test_rate_limiter_sees_the_real_client_ip(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory
) -> None:
    """Behind nginx, each client address has its own window, and a forged X-Forwarded-For
    does not buy a fresh one."""
    replica = replica_factory(RATE_LIMIT_MAX_REQUESTS="3", TRUSTED_PROXIES="127.0.0.1")
    proxy = edge_factory([replica])
    forged = {"X-Forwarded-For": "203.0.113.77"}
    async with (
        httpx.AsyncClient(
            base_url=proxy.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        ) as me,
        httpx.AsyncClient(
            base_url=proxy.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        ) as neighbour,
    ):
        mine = [(await me.get("/", headers=forged)).status_code for _ in range(4)]
        theirs = (await neighbour.get("/")).status_code
    assert mine == [200, 200, 200, 429]
    assert theirs == 200
    async with httpx.AsyncClient(
        base_url=replica.url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.4")
    ) as direct:
        spoofing = [(await direct.get("/", headers=forged)).status_code for _ in range(4)]
    assert spoofing == [200, 200, 200, 429]  # not trusted: counted under its own address

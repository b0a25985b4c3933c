"""SSE transport: framing and headers, live delivery, Last-Event-ID resume, keepalives."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import ReplicaFactory
from tests.support.clients import (
    AVAILABLE,
    assert_strictly_increasing,
    initiate,
    seq_of,
    sse_events,
    wait_status,
)

pytestmark = pytest.mark.integration


async def test_stream_headers_and_events(http: httpx.AsyncClient) -> None:
    """text/event-stream, no caching or buffering; id = seq, event = type; ends on terminal."""
    job = await initiate(http, AVAILABLE)
    async with http.stream("GET", job["streamUrl"]) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        assert response.headers["x-accel-buffering"] == "no"
        first_line = await response.aiter_lines().__anext__()
    assert first_line == "retry: 2000"
    events, _ = await sse_events(http, job["streamUrl"])
    assert events[0]["event"] == "snapshot"
    assert events[-1]["event"] == "completed"
    for event in events:
        assert event["id"] == f"{event['data']['epoch']}:{event['data']['seq']}"
        assert event["event"] == event["data"]["type"]
    assert_strictly_increasing([seq_of(e["id"]) for e in events])


async def test_frames_arrive_while_the_job_runs(http: httpx.AsyncClient) -> None:
    """A progress event is received while the job is still processing: nothing is buffered."""
    job = await initiate(http, AVAILABLE)
    events, _ = await sse_events(http, job["streamUrl"], limit=3)
    status = (await http.get(f"/v1/download/status/{job['jobId']}")).json()
    assert any(e["event"] == "progress" for e in events)
    assert status["status"] == "processing"


async def test_last_event_id_resumes_without_gap_or_duplicate(http: httpx.AsyncClient) -> None:
    """A reconnect with Last-Event-ID gets exactly the frames after it, then the rest."""
    job = await initiate(http, AVAILABLE)
    first, _ = await sse_events(http, job["streamUrl"], limit=4)
    last = first[-1]["id"]
    await asyncio.sleep(0.3)
    rest, _ = await sse_events(http, job["streamUrl"], headers={"Last-Event-ID": last})
    ids = [seq_of(e["id"]) for e in first[1:] + rest]
    assert ids == list(range(ids[0], ids[-1] + 1))
    assert rest[0]["event"] != "snapshot"
    assert rest[-1]["event"] == "completed"


async def test_since_query_for_the_first_request(http: httpx.AsyncClient) -> None:
    """?since= works like Last-Event-ID for a client that cannot set headers."""
    job = await initiate(http, [70000])
    first, _ = await sse_events(http, job["streamUrl"], limit=2)
    since = first[-1]["id"]
    rest, _ = await sse_events(http, f"{job['streamUrl']}?since={since}", limit=1)
    assert seq_of(rest[0]["id"]) == seq_of(since) + 1


async def test_keepalive_comments_on_an_idle_stream(replica_factory: ReplicaFactory) -> None:
    """A `: keepalive` comment goes out when no frame has for the keepalive interval."""
    replica = replica_factory(
        SSE_KEEPALIVE_S="0.2",
        JOB_CONCURRENCY="1",
        DOWNLOAD_DELAY_MIN_MS="3000",
        DOWNLOAD_DELAY_MAX_MS="3000",
    )
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        running = await initiate(client, [70000])
        # The only worker is busy before the next job exists (partitions are not FIFO).
        await wait_status(client, running["jobId"], {"processing"})
        waiting = await initiate(client, [70007])  # stays queued: an idle stream
        events, comments = [], []
        async with client.stream("GET", waiting["streamUrl"]) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            async with asyncio.timeout(5):
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        comments.append(line)
                        if len(comments) >= 2:
                            break
                    elif line.startswith("event:"):
                        events.append(line)
    assert comments == [": keepalive", ": keepalive"]
    assert events == ["event: snapshot"]


async def test_bad_resume_point_is_400(http: httpx.AsyncClient) -> None:
    """A non-numeric Last-Event-ID is refused before the stream starts."""
    job = await initiate(http, [70000])
    response = await http.get(job["streamUrl"], headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400

"""WebSocket transport: one job per socket, resume with since, and the multiplexed socket."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ReplicaFactory
from tests.support.clients import (
    AVAILABLE,
    assert_strictly_increasing,
    initiate,
    seqs,
    wait_status,
    ws_collect,
)
from tests.support.processes import Replica

pytestmark = pytest.mark.integration


async def test_whole_lifecycle_over_one_socket(http: httpx.AsyncClient, server: Replica) -> None:
    """Snapshot first, then every frame with increasing seq, then close 1000 after completed."""
    job = await initiate(http, AVAILABLE)
    result = await ws_collect(job["subscribeUrl"])
    frames = result.frames
    assert frames[0]["type"] == "snapshot"
    assert frames[-1]["type"] == "completed"
    assert result.close_code == 1000
    assert all(f["jobId"] == job["jobId"] and f["ts"] > 0 for f in frames)
    assert_strictly_increasing(seqs(frames))
    types = {f["type"] for f in frames}
    assert {"progress", "file"} <= types
    progress = [f["progress"] for f in frames if f["type"] == "progress"]
    assert progress == sorted(progress)  # the bar never goes backwards
    link = frames[-1]["downloadUrl"]
    assert link.startswith("/v1/files/exports/") or "X-Amz-Signature=" in link
    assert frames[-1]["filesIncluded"] == len(AVAILABLE)


async def test_since_resumes_without_gap_or_duplicate(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """Frames after `since` arrive exactly once, then live ones, across a reconnect."""
    job = await initiate(http, AVAILABLE)
    url = f"{server.ws_url}/v1/download/subscribe/{job['jobId']}"
    first = await ws_collect(url, limit=4)
    last = first.frames[-1]["seq"]
    await asyncio.sleep(0.3)  # frames keep flowing while we are away
    rest = await ws_collect(f"{url}?since={last}")
    assert rest.frames[0]["type"] != "snapshot"
    assert rest.frames[0]["seq"] == last + 1
    combined = seqs(first.frames[1:]) + seqs(rest.frames)
    assert combined == list(range(first.frames[1]["seq"], rest.frames[-1]["seq"] + 1))
    assert rest.frames[-1]["type"] == "completed"


async def test_finished_job_sends_terminal_snapshot_and_closes(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """Subscribing after the end gives the final document at once, with a fresh link."""
    job = await initiate(http, [70000])
    await wait_status(http, job["jobId"], {"completed"})
    result = await ws_collect(job["subscribeUrl"])
    assert len(result.frames) == 1
    snapshot = result.frames[0]
    assert snapshot["job"]["status"] == "completed"
    assert snapshot["job"]["downloadUrl"]
    assert result.close_code == 1000


async def test_unknown_and_malformed_jobs_close_with_codes(server: Replica) -> None:
    """An unknown job gets an error message then close 4404; a malformed id 1008."""
    unknown = await ws_collect(f"{server.ws_url}/v1/download/subscribe/{uuid.uuid4()}")
    assert unknown.frames[0]["type"] == "error"
    assert unknown.frames[0]["code"] == "not_found"
    assert unknown.close_code == 4404
    malformed = await ws_collect(f"{server.ws_url}/v1/download/subscribe/nope")
    assert malformed.close_code == 1008
    bad_since = await ws_collect(f"{server.ws_url}/v1/download/subscribe/{uuid.uuid4()}?since=x")
    assert bad_since.close_code == 1008


async def test_a_socket_to_an_unknown_path_is_refused_at_the_handshake(server: Replica) -> None:
    """Paths no WebSocket route matches still get Starlette's answer (403), and nothing else
    changes for the routes that do match."""
    for path in ("/v1/nope", "/v1/ws/extra", f"/v1/download/subscribe/{uuid.uuid4()}/x", "/"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{server.ws_url}{path}", open_timeout=5):
                pass
        assert refused.value.response.status_code == 403, path
    async with connect(f"{server.ws_url}/v1/ws", open_timeout=5) as ws:
        await ws.send('{"op":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


async def _until(ws: ClientConnection, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            seen.append(message)
            if predicate(message, seen):
                return seen


def _finished(jobs: set[str]) -> Any:
    def check(message: dict[str, Any], seen: list[dict[str, Any]]) -> bool:
        ended = {m["jobId"] for m in seen if m["type"] in ("completed", "failed", "cancelled")}
        return ended >= jobs

    return check


async def test_multiplexed_socket_follows_three_jobs(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """One socket, three jobs: an ack each, every frame tagged, each job's seq increasing."""
    jobs = [await initiate(http, [file_id]) for file_id in AVAILABLE]
    ids = {j["jobId"] for j in jobs}
    async with connect(f"{server.ws_url}/v1/ws") as ws:
        for job_id in ids:
            await ws.send(json.dumps({"op": "subscribe", "jobId": job_id}))
        seen = await _until(ws, _finished(ids))
        await ws.send(json.dumps({"op": "ping"}))
        pong = json.loads(await ws.recv())
    acks = [m for m in seen if m["type"] == "ack"]
    assert {a["jobId"] for a in acks} == ids
    for job_id in ids:
        frames = [m for m in seen if m.get("jobId") == job_id and m["type"] != "ack"]
        assert frames[0]["type"] == "snapshot"
        assert frames[-1]["type"] == "completed"
        assert_strictly_increasing(seqs(frames))
    assert pong["type"] == "pong"


async def test_multiplexed_bad_messages_get_errors_and_socket_stays(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """Garbage, unknown ops, binary frames and unknown jobs each get an error; pings still work."""
    unknown = str(uuid.uuid4())
    async with connect(f"{server.ws_url}/v1/ws") as ws:
        for bad in (
            "not json",
            '{"op":"dance"}',
            '{"op":"subscribe"}',
            '{"op":"subscribe","jobId":"../../etc/passwd"}',
            b"\x00\x01binary",
            json.dumps({"op": "subscribe", "jobId": unknown}),
            json.dumps({"op": "unsubscribe", "jobId": unknown}),
        ):
            await ws.send(bad)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error", bad
            assert reply["message"]
        await ws.send('{"op":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    assert reply["code"] == "not_subscribed"


async def test_multiplexed_unsubscribe_and_resume(http: httpx.AsyncClient, server: Replica) -> None:
    """Unsubscribe is acknowledged and stops frames; subscribing with since resumes exactly."""
    job = await initiate(http, AVAILABLE)
    job_id = job["jobId"]
    async with connect(f"{server.ws_url}/v1/ws") as ws:
        await ws.send(json.dumps({"op": "subscribe", "jobId": job_id}))
        first = await _until(ws, lambda m, seen: len(seen) >= 4)
        await ws.send(json.dumps({"op": "unsubscribe", "jobId": job_id}))
        tail = await _until(ws, lambda m, seen: m["type"] == "ack" and m["op"] == "unsubscribe")
        last = max(m["seq"] for m in first + tail if m["type"] not in ("ack",))
        await asyncio.sleep(0.3)
        await ws.send(json.dumps({"op": "subscribe", "jobId": job_id, "since": last}))
        rest = await _until(ws, _finished({job_id}))
    frames = [m for m in rest if m["type"] != "ack"]
    assert frames[0]["seq"] == last + 1
    assert_strictly_increasing(seqs(frames))
    assert frames[-1]["type"] == "completed"


async def test_resume_past_the_kept_history_says_not_recovered(
    replica_factory: ReplicaFactory,
) -> None:
    """When frames after `since` were trimmed, the client gets a snapshot marked recovered=false."""
    replica = replica_factory(
        HISTORY_MAX_FRAMES="16", PROGRESS_INTERVAL_MS="0",
        DOWNLOAD_DELAY_MIN_MS="300", DOWNLOAD_DELAY_MAX_MS="300",
    )  # fmt: skip
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        job = await initiate(client, AVAILABLE)
        done = await wait_status(client, job["jobId"], {"completed"})
    assert done["seq"] > 20
    result = await ws_collect(f"{replica.ws_url}/v1/download/subscribe/{job['jobId']}?since=1")
    assert result.frames[0]["type"] == "snapshot"
    assert result.frames[0]["recovered"] is False
    assert result.frames[0]["seq"] == done["seq"]
    recent = await ws_collect(
        f"{replica.ws_url}/v1/download/subscribe/{job['jobId']}?since={done['seq'] - 3}"
    )
    assert seqs(recent.frames) == [done["seq"] - 2, done["seq"] - 1, done["seq"]]

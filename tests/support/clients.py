"""Small real clients for the tests: HTTP (httpx), WebSocket (websockets) and SSE."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

AVAILABLE = [70000, 70007, 70014]
UNAVAILABLE = 99999


async def initiate(http: httpx.AsyncClient, file_ids: list[int], **headers: str) -> dict[str, Any]:
    response = await http.post(
        "/v1/download/initiate", json={"file_ids": file_ids}, headers=headers
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_status(
    http: httpx.AsyncClient, job_id: str, statuses: set[str], timeout: float = 20
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = (await http.get(f"/v1/download/status/{job_id}")).json()
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.05)


class WsResult:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""


async def ws_collect(
    url: str,
    *,
    limit: int | None = None,
    timeout: float = 20,
    headers: dict[str, str] | None = None,
) -> WsResult:
    """Read frames until the server closes (or ``limit`` frames arrived, then hang up)."""
    result = WsResult()
    async with asyncio.timeout(timeout), connect(url, additional_headers=headers) as ws:
        try:
            async for raw in ws:
                result.frames.append(json.loads(raw))
                if limit is not None and len(result.frames) >= limit:
                    return result
        except ConnectionClosed:
            pass
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


async def sse_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
    timeout: float = 20,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse an event stream into events ({id, event, data}) and comment lines."""
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout), client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line == "":
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                    events.append(current)
                    if limit is not None and len(events) >= limit:
                        return events, comments
                current = {}
            else:
                field, _, value = line.partition(": ")
                current[field] = value
    return events, comments


def final_status(frames: list[dict[str, Any]]) -> str:
    """The job status the last frame reports: a terminal frame's type, or, when the job had
    ended before the client subscribed, the status in the terminal snapshot it got instead."""
    last = frames[-1]
    status: str = last["job"]["status"] if last["type"] == "snapshot" else last["type"]
    return status


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["seq"] for f in frames]


def seq_of(event_id: str) -> int:
    """The seq of an SSE event id (``<epoch>:<seq>``)."""
    return int(event_id.rpartition(":")[2])


def assert_strictly_increasing(values: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(values)), values

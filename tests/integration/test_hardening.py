"""Bad actors at the edges: foreign origins, socket floods, traversal, and fuzzed sockets."""

from __future__ import annotations

import asyncio
import json
import os
import random

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ReplicaFactory
from tests.support.clients import AVAILABLE, initiate, ws_collect
from tests.support.processes import Replica

pytestmark = pytest.mark.integration


async def test_websocket_origin_is_checked(replica_factory: ReplicaFactory) -> None:
    """With CORS_ORIGINS restricted, a handshake from another site is refused with 403."""
    replica = replica_factory(CORS_ORIGINS="https://app.example")
    url = f"{replica.ws_url}/v1/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    for origin in ("https://app.example", None):  # the page, and a non-browser client
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send('{"op":"ping"}')
            assert json.loads(await ws.recv())["type"] == "pong"


async def test_sockets_per_address_are_capped(replica_factory: ReplicaFactory) -> None:
    """Past MAX_SOCKETS_PER_IP a socket is closed with 1013 and an SSE stream gets 429."""
    replica = replica_factory(MAX_SOCKETS_PER_IP="2")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        job = await initiate(http, AVAILABLE)
        async with connect(f"{replica.ws_url}/v1/ws"), connect(f"{replica.ws_url}/v1/ws"):
            third = await ws_collect(f"{replica.ws_url}/v1/ws")
            stream = await http.get(job["streamUrl"])
        assert third.close_code == 1013
        assert third.frames[0]["code"] == "rate_limited"
        assert stream.status_code == 429
        async with connect(f"{replica.ws_url}/v1/ws") as ws:  # freed again once they closed
            await ws.send('{"op":"ping"}')
            assert json.loads(await ws.recv())["type"] == "pong"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/../../etc/passwd",
        "/v1/files/%2e%2e/%2e%2e/etc/passwd",
        "/v1/files/downloads/..%2f..%2fpyproject.toml?expires=9999999999&signature=x",
        "/v1/files/exports/..%2F..%2F..%2Fetc%2Fpasswd.zip",
        "/v1/download/status/..%2F..%2Fetc%2Fpasswd",
        "/v1/download/..%2F..%2Fetc%2Fpasswd",
    ],
)
async def test_traversal_never_reaches_a_file(http: httpx.AsyncClient, path: str) -> None:
    """Encoded or plain `../` in a link or a job id is refused, never served."""
    response = await http.get(path)
    assert response.status_code in (400, 403, 404)
    assert b"root:" not in response.content
    assert b"[project]" not in response.content


@pytest.mark.parametrize("file_id", [10**30, -70000, 1e400])
async def test_huge_or_negative_ids_are_400(http: httpx.AsyncClient, file_id: float) -> None:
    """Ids outside the range (even ones no integer type holds) are validation errors."""
    body = f'{{"file_ids": [{file_id if file_id != 1e400 else "1e400"}]}}'
    response = await http.post(
        "/v1/download/initiate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


async def _fuzz(url: str, rng: random.Random) -> None:
    """Throw garbage at a multiplexed socket; any close is fine, a crash is not."""
    payloads: list[str | bytes] = [
        os.urandom(rng.randint(1, 512)),
        "{" * rng.randint(1, 300),
        json.dumps({"op": "subscribe", "jobId": "x" * rng.randint(1, 60)}),
        json.dumps({"op": rng.choice(["", "SUBSCRIBE", "pong", None, 7]), "jobId": 1}),
        "\ud800".encode("utf-8", "surrogatepass"),  # invalid UTF-8 sent as binary
        "x" * 10_000,  # over MAX_WS_MESSAGE_BYTES
        *[
            json.dumps({"op": "subscribe", "jobId": str(rng.randbytes(16).hex())})
            for _ in range(20)
        ],
    ]
    try:
        async with connect(url, max_size=None) as ws:
            for payload in rng.sample(payloads, len(payloads)):
                await ws.send(payload)
            async with asyncio.timeout(2):
                while True:
                    await ws.recv()
    except (ConnectionClosed, TimeoutError, OSError):
        pass


async def test_websocket_fuzz_leaves_the_server_and_good_clients_fine(
    http: httpx.AsyncClient, server: Replica
) -> None:
    """Fuzzed sockets (random bytes, binary, invalid UTF-8, huge frames, bad JSON, unknown ops,
    subscribe floods) next to a normal client: the normal client gets its job, health stays ok."""
    job = await initiate(http, AVAILABLE)
    good = asyncio.ensure_future(ws_collect(job["subscribeUrl"]))
    rng = random.Random(2026)
    await asyncio.gather(*(_fuzz(f"{server.ws_url}/v1/ws", rng) for _ in range(30)))
    result = await good
    assert result.frames[-1]["type"] == "completed"
    assert (await http.get("/health")).status_code == 200
    async with connect(f"{server.ws_url}/v1/ws") as ws:
        await ws.send('{"op":"ping"}')
        assert json.loads(await ws.recv())["type"] == "pong"


async def test_a_socket_that_follows_nothing_is_closed_when_idle(
    replica_factory: ReplicaFactory,
) -> None:
    """IDLE_SOCKET_TIMEOUT_S: a socket with no subscription is closed with 4408; one that
    follows a job stays, and its clock starts again once it follows nothing."""
    replica = replica_factory(IDLE_SOCKET_TIMEOUT_S="1")
    url = f"{replica.ws_url}/v1/ws"
    idle = await ws_collect(url, timeout=10)
    assert idle.close_code == 4408
    assert idle.close_reason == "idle: no subscription for 1 s"
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        job = await initiate(http, AVAILABLE)  # runs ~1 s
    async with connect(url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "jobId": job["jobId"]}))
        frames = await read_until_closed(ws)
        # The job's frames to the end, then idle for a second, then the close.
        assert any(f["type"] == "completed" for f in frames)
        assert ws.close_code == 4408


async def read_until_closed(ws: ClientConnection) -> list[dict[str, object]]:
    """Every message until the server closes (with any code)."""
    frames = []
    async with asyncio.timeout(10):
        try:
            async for raw in ws:
                frames.append(json.loads(raw))
        except ConnectionClosed:
            pass
    return frames

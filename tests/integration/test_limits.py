"""The limits a replica holds itself, with no proxy in front: raw sockets against a real one.

Deep JSON (400, an error frame on a socket), body and header sizes (413, 431), header and
body timeouts (408), the connection closed after an early answer, and the safe defaults:
no proxy trusted, tokens redacted however their key is spelled, a blank JWT subject
refused, initiate bounded whatever the store does, links built from PUBLIC_BASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect

from delineate.http.auth import Authenticator
from delineate.settings import Settings
from tests.support.clients import AVAILABLE, initiate, wait_status, ws_collect
from tests.support.processes import TEST_ENV, Replica, ReplicaGroup
from tests.support.proxy import ReplyGate
from tests.support.services import Backend

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
JWT_SECRET = "jwt-test-secret-of-at-least-32-bytes"
Start = Callable[..., Replica]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Replicas on the embedded backend (the limits do not depend on it), stopped after."""
    group = ReplicaGroup(tmp_path, "limits")

    def run(**env: str) -> Replica:
        return group.start({"DATA_DIR": str(tmp_path / "data"), **env})

    yield run
    group.stop()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, str]:
    body: dict[str, str] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body


async def answer_to(replica: Replica, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` on a fresh connection; everything the server sends until it closes
    the connection (a TimeoutError when it keeps it open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        await closed(writer)


async def closed(writer: asyncio.StreamWriter) -> None:
    """Close and wait for it: a transport left closing when the test's loop ends is an
    unraisable warning in whichever test runs next."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def peak_rss_kib(replica: Replica) -> int:
    """The replica's peak resident set (VmHWM): it only grows, so it catches a spike."""
    for line in Path(f"/proc/{replica.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


# --- 7: deeply nested JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/download/initiate", "/v1/download/check", "/v1/download/start"]
)
async def test_deeply_nested_json_is_a_400(start: Start, path: str) -> None:
    """JSON nested past MAX_JSON_DEPTH is a 400 saying so, never a 500 (RecursionError)."""
    replica = start(DOWNLOAD_DELAY_ENABLED="false")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        for depth in (33, 1000, 100_000):
            body = '{"file_ids": ' + nested(depth) + ', "file_id": ' + nested(depth) + "}"
            response = await http.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, response.text
            assert "nests deeper than 32 levels" in response.json()["message"]
        within = await http.post(path, json={"file_ids": [70000], "file_id": 70000, "x": [[[]]]})
        assert within.status_code in (200, 202), within.text
    log = replica.log()
    assert "RecursionError" not in log
    assert "Traceback" not in log


async def test_deeply_nested_websocket_op_gets_an_error_frame(start: Start) -> None:
    """A WebSocket op nested past MAX_JSON_DEPTH gets an error frame; the socket carries on."""
    replica = start()
    async with connect(f"{replica.ws_url}/v1/ws") as ws:
        await ws.send('{"op": "ping", "x": ' + nested(1000) + "}")
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "error"
        assert error["code"] == "bad_request"
        assert "nested deeper than 32 levels" in error["message"]
        await ws.send('{"op": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    assert "RecursionError" not in replica.log()


# --- 8: sizes and timeouts -----------------------------------------------------------------


async def test_declared_oversized_body_is_413_before_it_is_sent(start: Start) -> None:
    """A Content-Length over MAX_BODY_BYTES is answered 413 at once, the body never read."""
    replica = start()
    head = (
        b"POST /v1/download/initiate HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n"
    )
    answer = await answer_to(replica, head)  # not a byte of the body sent
    assert status_of(answer) == 413
    assert body_of(answer)["message"] == "the request body is larger than 1048576 bytes"
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("part", ["chunked body", "headers"])
async def test_flood_is_refused_while_it_streams_in_bounded_memory(start: Start, part: str) -> None:
    """50 MiB of chunked body (or of headers) is answered (413 / 431) while it is still being
    sent, and the replica's peak memory does not grow with it."""
    replica = start()
    before = peak_rss_kib(replica)
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    if part == "headers":
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        piece, expected = b"a" * 65536, 431
    else:
        writer.write(
            b"POST /v1/download/initiate HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece, expected = b"10000\r\n" + b" " * 65536 + b"\r\n", 413
    answer = asyncio.ensure_future(reader.read())  # to the end the server sends
    sent, total = 0, 50 * MiB
    try:
        while sent < total and not answer.done():
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0)  # drain() need not yield: let the reader look
    except ConnectionError:
        pass  # the server stopped listening: it answered first
    data = await asyncio.wait_for(answer, 10)
    await closed(writer)
    assert status_of(data) == expected
    assert sent < total, "the answer only came once everything was sent"
    assert peak_rss_kib(replica) - before < 32 * 1024, "memory grew with the request"


UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize("kind", ["plain", "websocket handshake"])
async def test_header_size_and_count_limits(start: Start, kind: str) -> None:
    """Headers over MAX_HEADER_BYTES, or more than MAX_HEADER_COUNT fields, are a 431 (a
    WebSocket handshake's too, which is then never upgraded)."""
    replica = start()
    line = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n" + (UPGRADE if kind != "plain" else b"")

    async def status_with(extra: bytes) -> int:
        return status_of(await answer_to(replica, line + extra + b"\r\n", timeout=5))

    assert await status_with(b"X-Big: " + b"a" * 40_000 + b"\r\n") == 431
    assert await status_with(b"".join(b"X-Field-%d: v\r\n" % i for i in range(150))) == 431
    log = replica.log()
    assert "Traceback" not in log
    assert "data_received" not in log
    if kind == "plain":  # within both limits: answered as usual
        fine = b"".join(b"X-Field-%d: v\r\n" % i for i in range(50))
        answer = await answer_to(
            replica, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fine + b"\r\n"
        )
        assert status_of(answer) == 200


async def test_unfinished_headers_are_closed(start: Start) -> None:
    """A connection that never completes its headers is closed after HEADER_TIMEOUT_S: 408
    when part of a request came, nothing when nothing did."""
    replica = start(HEADER_TIMEOUT_S="1")
    silent, partial = await asyncio.gather(
        answer_to(replica, b""),
        answer_to(replica, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "),
    )
    assert silent == b""
    assert status_of(partial) == 408


async def test_stalled_body_is_408(start: Start) -> None:
    """A body that stops arriving for BODY_TIMEOUT_S is answered 408, connection closed."""
    replica = start(BODY_TIMEOUT_S="1")
    head = (
        b"POST /v1/download/initiate HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    answer = await answer_to(replica, head + b'{"file_ids')
    assert status_of(answer) == 408
    assert body_of(answer)["message"] == "the request body stopped arriving"


async def test_early_answer_closes_a_never_ending_body(start: Start) -> None:
    """A response that starts before the body has all come (here the 504 of
    REQUEST_TIMEOUT_MS) closes the connection: the rest of the body is never read."""
    replica = start(REQUEST_TIMEOUT_MS="1000", BODY_TIMEOUT_S="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", replica.port)
    writer.write(
        b"POST /v1/download/initiate HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    received = bytearray()

    async def read_until_closed() -> None:
        # The answer, then the end of the connection; a reset (this client kept writing
        # into a connection the server closed) ends it too, after what had arrived.
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    answer = asyncio.ensure_future(read_until_closed())
    try:
        for _ in range(40):  # a chunk every 0.2 s, for at most 8 s
            if answer.done():
                break
            writer.write(b"1\r\n \r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass
    await asyncio.wait_for(answer, 5)  # the server closed the connection
    await closed(writer)
    data = bytes(received)
    assert status_of(data) == 504
    assert b"connection: close" in data.lower()


# --- 9: defaults and edges ------------------------------------------------------------------


async def test_forwarded_headers_are_not_trusted_by_default(start: Start) -> None:
    """Without TRUSTED_PROXIES, a made-up X-Forwarded-For neither opens a fresh rate-limit
    window nor a fresh socket allowance."""
    replica = start(RATE_LIMIT_MAX_REQUESTS="3", MAX_SOCKETS_PER_IP="1")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        replies = [
            await http.get("/", headers={"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(4)
        ]
    # One window for the one peer (the start-up's /health checks counted in it too).
    assert replies[0].status_code == 200
    assert replies[-1].status_code == 429
    url = f"{replica.ws_url}/v1/ws"
    async with connect(url, additional_headers={"X-Forwarded-For": "203.0.113.1"}):
        second = await ws_collect(url, headers={"X-Forwarded-For": "203.0.113.2"})
    assert second.close_code == 1013


async def test_token_is_redacted_however_its_key_is_spelled(start: Start) -> None:
    """``?tok%65n=`` authenticates as ``?token=`` does, and is blanked in the log as well."""
    replica = start(API_KEYS="alice:key-alice")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        token = (await http.post("/v1/stream-token", headers={"X-API-Key": "key-alice"})).json()
    secret = token["token"]
    async with connect(f"{replica.ws_url}/v1/ws?tok%65n={secret}") as ws:
        await ws.send('{"op": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    await asyncio.sleep(0.2)  # let the handshake line reach the log file
    log = replica.log_path.read_text()
    assert "tok%65n=[redacted]" in log
    assert secret not in log


async def test_a_blank_subject_is_refused(start: Start) -> None:
    """A JWT or stream token whose ``sub`` is "" is a 401, not an anonymous owner."""
    replica = start(JWT_SECRET=JWT_SECRET)
    blank = jwt.encode({"sub": "", "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256")
    settings = Settings(url_signing_secret=TEST_ENV["URL_SIGNING_SECRET"], jwt_secret=JWT_SECRET)
    blank_stream = Authenticator(settings).issue_stream_token("").token
    job = "/v1/download/status/00000000-0000-4000-8000-000000000000"
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        as_bearer = await http.get(job, headers={"Authorization": f"Bearer {blank}"})
        as_stream = await http.get(
            f"/v1/download/stream/{job.rsplit('/', 1)[1]}?token={blank_stream}"
        )
    for response in (as_bearer, as_stream):
        assert response.status_code == 401, response.text
        assert "sub must be a non-empty string" in response.json()["message"]


async def test_initiate_answers_while_the_store_hangs(redis_backend: Backend) -> None:
    """With S3 accepting requests but never answering, initiate still answers 202 well
    within REQUEST_TIMEOUT_MS; the runner checks the files once the store is back."""
    assert redis_backend.s3 is not None
    target = int(redis_backend.s3.endpoint.rsplit(":", 1)[1])
    async with ReplyGate(target) as gate:
        env = {
            **redis_backend.env(),
            "S3_ENDPOINT": f"http://127.0.0.1:{gate.port}",
            "REQUEST_TIMEOUT_MS": "10000",
        }
        replica = Replica("hung-s3", env, redis_backend.tmp)
        await asyncio.to_thread(replica.start)  # the gate relays while it starts
        try:
            gate.hold()
            async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
                job = await initiate(http, [AVAILABLE[0]])
                gate.release()
                done = await wait_status(http, job["jobId"], {"completed", "failed"}, 60)
            assert done["status"] == "completed", done
        finally:
            gate.release()
            await asyncio.to_thread(replica.stop)


async def test_links_use_public_base_url(start: Start) -> None:
    """With PUBLIC_BASE_URL set, every absolute link starts with it, whatever Host says."""
    replica = start(PUBLIC_BASE_URL="https://dl.example/api/")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        job = await initiate(http, [AVAILABLE[0]], Host="evil.example")
        done = await wait_status(http, job["jobId"], {"completed"})
        result = (
            await http.get(f"/v1/download/result/{job['jobId']}", headers={"Host": "evil.example"})
        ).json()
        response = await http.post(
            "/v1/download/initiate", json={"file_ids": [70007]}, headers={"Host": "evil.example"}
        )
    base = "https://dl.example/api/v1/"
    for name in ("statusUrl", "resultUrl", "streamUrl", "cancelUrl"):
        assert job[name].startswith(base), job
    assert job["subscribeUrl"].startswith("wss://dl.example/api/v1/download/subscribe/")
    assert result["downloadUrl"].startswith(base + "files/"), result
    assert response.headers["location"].startswith(base)
    assert done["status"] == "completed"

"""Who may see what: API keys, JWTs, stream tokens, owners, and the caps per owner.

Replicas run on real Redis (the ``cluster`` fixture), as they do behind nginx in production.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from delineate.http.auth import Authenticator
from delineate.settings import Settings
from tests.conftest import Cluster
from tests.support.clients import (
    AVAILABLE,
    UNAVAILABLE,
    final_status,
    initiate,
    sse_events,
    ws_collect,
)
from tests.support.processes import TEST_ENV, Replica

pytestmark = pytest.mark.integration

JWT_SECRET = "jwt-test-secret-of-at-least-32-bytes"
AUTH_ENV = {"API_KEYS": "alice:key-alice,bob:key-bob", "JWT_SECRET": JWT_SECRET}
ALICE = {"X-API-Key": "key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
# Long enough that jobs are still running while the test looks at them.
SLOW = {"DOWNLOAD_DELAY_MIN_MS": "20000", "DOWNLOAD_DELAY_MAX_MS": "20000"}


def token_for(sub: str, *, exp_in: float = 300, secret: str = JWT_SECRET, **claims: Any) -> str:
    payload = {"sub": sub, "exp": int(time.time() + exp_in), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def same_as_unknown(response: httpx.Response, job_id: str) -> None:
    """Another owner's job answers exactly as a job that does not exist."""
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "Not Found"
    assert body["message"] == f"no job {job_id}"


@pytest.fixture
def replica(cluster: Cluster) -> Replica:
    return cluster(1, **AUTH_ENV, **SLOW)[0]


async def test_v1_routes_need_a_credential_and_open_routes_stay_open(replica: Replica) -> None:
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        for method, path in [
            ("POST", "/v1/download/initiate"),
            ("GET", "/v1/download/status/6f1c7c2a-0000-4000-8000-000000000000"),
            ("POST", "/v1/download/check"),
            ("POST", "/v1/stream-token"),
        ]:
            response = await http.request(method, path, json={"file_ids": [70000]})
            assert response.status_code == 401, (path, response.text)
            body = response.json()
            assert body["error"] == "Unauthorized"
            assert body["requestId"] == response.headers["x-request-id"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        for path in ("/", "/health", "/openapi.json", "/metrics"):
            assert (await http.get(path)).status_code == 200, path
        wrong = await http.post("/v1/stream-token", headers={"X-API-Key": "key-mallory"})
        assert wrong.status_code == 401
        assert wrong.json()["message"] == "unknown API key"
    for path in ("/v1/ws", "/v1/download/subscribe/6f1c7c2a-0000-4000-8000-000000000000"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{replica.ws_url}{path}"):
                pass
        assert refused.value.response.status_code == 401


async def test_other_owners_jobs_look_like_unknown_jobs_everywhere(replica: Replica) -> None:
    """Status, result, redirect, cancel, SSE, both WebSocket routes: 404 / not_found for Bob,
    and the multiplexed socket checks every subscribe (his own job works on it)."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        alices = (await initiate(http, AVAILABLE, **ALICE))["jobId"]
        bobs = (await initiate(http, [AVAILABLE[0]], **BOB))["jobId"]
        for method, path in [
            ("GET", f"/v1/download/status/{alices}"),
            ("GET", f"/v1/download/result/{alices}"),
            ("GET", f"/v1/download/{alices}"),
            ("POST", f"/v1/download/cancel/{alices}"),
            ("GET", f"/v1/download/stream/{alices}"),
        ]:
            same_as_unknown(await http.request(method, path, headers=BOB), alices)
        mine = await http.get(f"/v1/download/status/{alices}", headers=ALICE)
        assert mine.status_code == 200
        assert mine.json()["status"] in ("queued", "processing")

    single = await ws_collect(f"{replica.ws_url}/v1/download/subscribe/{alices}", headers=BOB)
    assert single.close_code == 4404
    assert single.frames == [
        {"type": "error", "code": "not_found", "message": f"no job {alices}", "jobId": None}
    ]

    async with connect(f"{replica.ws_url}/v1/ws", additional_headers=BOB) as ws:
        await ws.send(json.dumps({"op": "subscribe", "jobId": alices}))
        refused = json.loads(await ws.recv())
        assert refused["type"] == "error"
        assert refused["code"] == "not_found"
        assert refused["jobId"] == alices
        await ws.send(json.dumps({"op": "subscribe", "jobId": bobs}))
        assert json.loads(await ws.recv()) == {"type": "ack", "op": "subscribe", "jobId": bobs}
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot"
        assert snapshot["job"]["jobId"] == bobs


async def test_jwt_sub_is_the_owner_and_bad_tokens_are_refused(replica: Replica) -> None:
    alice_jwt = {"Authorization": f"Bearer {token_for('alice')}"}
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        job = (await initiate(http, AVAILABLE, **ALICE))["jobId"]
        # The same owner whichever credential she uses.
        seen = await http.get(f"/v1/download/status/{job}", headers=alice_jwt)
        assert seen.status_code == 200
        for bad in [
            token_for("alice", exp_in=-60),  # expired
            token_for("alice", secret="another-secret-also-32-bytes-long"),  # forged
            jwt.encode({"sub": "alice"}, JWT_SECRET, algorithm="HS256"),  # never expires
            jwt.encode(
                {"sub": "alice", "exp": time.time() + 60}, JWT_SECRET * 2, algorithm="HS384"
            ),
        ]:
            refused = await http.get(
                f"/v1/download/status/{job}", headers={"Authorization": f"Bearer {bad}"}
            )
            assert refused.status_code == 401, bad
            assert refused.json()["message"].startswith("invalid token")


async def test_stream_tokens_open_streams_only_and_never_reach_the_logs(replica: Replica) -> None:
    """A browser's path: the initiate response (or POST /v1/stream-token) gives a token that
    opens the WebSocket and the event stream of the owner's jobs, and nothing else."""
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        created = await initiate(http, [UNAVAILABLE], **ALICE)  # fails fast: a short stream
        job, token = created["jobId"], created["streamToken"]
        issued = await http.post("/v1/stream-token", headers=ALICE)
        assert issued.status_code == 200
        assert issued.json()["expiresIn"] == 300
        fresh = issued.json()["token"]

        done = await ws_collect(f"{replica.ws_url}/v1/download/subscribe/{job}?token={token}")
        assert done.close_code == 1000
        assert final_status(done.frames) == "failed"  # its failed frame, or a snapshot if late
        events, _ = await sse_events(http, f"/v1/download/stream/{job}?token={fresh}")
        # The job had failed already: the stream is its terminal snapshot.
        assert events[-1]["event"] == "snapshot"
        assert events[-1]["data"]["job"]["status"] == "failed"

        # Not an API credential: not in the query of another route, not as a bearer token.
        as_query = await http.get(f"/v1/download/status/{job}?token={fresh}")
        assert as_query.status_code == 401
        as_bearer = await http.get(
            f"/v1/download/status/{job}", headers={"Authorization": f"Bearer {fresh}"}
        )
        assert as_bearer.status_code == 401
        # Bob's token does not open Alice's stream.
        bobs = (await http.post("/v1/stream-token", headers=BOB)).json()["token"]
        stream = await http.get(f"/v1/download/stream/{job}?token={bobs}")
        same_as_unknown(stream, job)

    settings = Settings(url_signing_secret=TEST_ENV["URL_SIGNING_SECRET"], **lower(AUTH_ENV))
    expired = Authenticator(settings).issue_stream_token("alice", now=time.time() - 3600).token
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{replica.ws_url}/v1/ws?token={expired}"):
            pass
    assert refused.value.response.status_code == 401

    await asyncio.sleep(0.2)  # let the access lines reach the log file
    log = replica.log_path.read_text()
    assert "token=[redacted]" in log, "the handshake lines are logged, with the token blanked"
    for secret in (token, fresh, bobs, expired):
        assert secret not in log


def lower(env: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in env.items()}


async def test_active_jobs_are_capped_per_owner_across_replicas(cluster: Cluster) -> None:
    """MAX_ACTIVE_JOBS_PER_OWNER counts in Redis: the third unfinished job of Alice is refused
    on whichever replica she asks, Bob is unaffected, and a finished job frees a slot."""
    first, second = cluster(2, **AUTH_ENV, **SLOW, MAX_ACTIVE_JOBS_PER_OWNER="2")
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as a,
        httpx.AsyncClient(base_url=second.url, timeout=10) as b,
    ):
        job = (await initiate(a, AVAILABLE, **ALICE))["jobId"]
        await initiate(b, AVAILABLE, **ALICE)
        refused = await a.post("/v1/download/initiate", json={"file_ids": AVAILABLE}, headers=ALICE)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["message"].startswith("at most 2 unfinished jobs")
        assert (
            await b.post("/v1/download/initiate", json={"file_ids": AVAILABLE}, headers=ALICE)
        ).status_code == 429
        await initiate(b, AVAILABLE, **BOB)
        cancelled = await b.post(f"/v1/download/cancel/{job}", headers=ALICE)
        assert cancelled.json()["status"] == "cancelled"
        await initiate(a, AVAILABLE, **ALICE)


async def test_the_rate_limit_is_shared_by_replicas(cluster: Cluster) -> None:
    """Five requests per window in all, not five per replica; the headers count down across.
    (A one-day window: the test cannot straddle two windows unless it runs at midnight UTC.)"""
    first, second = cluster(2, RATE_LIMIT_MAX_REQUESTS="5", RATE_LIMIT_WINDOW_MS="86400000")
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as a,
        httpx.AsyncClient(base_url=second.url, timeout=10) as b,
    ):
        # The replicas' own start-up health checks came out of the same budget.
        remaining = []
        for client in (a, b, a, b, a, b):
            response = await client.get("/")
            if response.status_code == 429:
                break
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert len(remaining) >= 2, "each replica answered at least once"
        assert remaining == list(range(remaining[0], -1, -1)), "one count across replicas"
        for client in (b, a):
            refused = await client.get("/")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"] == "Too Many Requests"


async def test_a_bundle_over_the_size_cap_is_refused_up_front(cluster: Cluster) -> None:
    (replica,) = cluster(1, MAX_BUNDLE_BYTES="1")
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        response = await http.post("/v1/download/initiate", json={"file_ids": AVAILABLE})
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "Unprocessable Entity"
        assert "MAX_BUNDLE_BYTES" in body["message"]
        assert body["requestId"]
        # Nothing is held: missing files weigh nothing, so this one is accepted.
        await initiate(http, [UNAVAILABLE])

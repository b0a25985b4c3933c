"""The original service's HTTP contract (shared/CONTRACT.md), against a real uvicorn process."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from delineate.storage import demo
from tests.conftest import ReplicaFactory

pytestmark = pytest.mark.integration

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "strict-transport-security": "max-age=15552000; includeSubDomains",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-dns-prefetch-control": "off",
    "x-permitted-cross-domain-policies": "none",
    "x-xss-protection": "0",
}


def assert_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert set(body) >= {"error", "message", "requestId"}
    assert body["requestId"] == response.headers["x-request-id"]
    assert body["message"]
    return body


async def test_root_keeps_the_original_greeting(http: httpx.AsyncClient) -> None:
    """GET / answers the original's exact JSON."""
    response = await http.get("/")
    assert response.status_code == 200
    assert response.json() == {"message": "Hello Hono!"}


@pytest.mark.parametrize("path", ["/", "/nope", "/v1/download/status/not-a-uuid"])
async def test_every_response_carries_edge_headers(http: httpx.AsyncClient, path: str) -> None:
    """Security headers, CORS `*` without an Origin, a uuid4 request id: also on errors."""
    response = await http.get(path)
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    assert response.headers["access-control-allow-origin"] == "*"
    assert "X-Request-ID" in response.headers["access-control-expose-headers"]
    assert UUID4.match(response.headers["x-request-id"])
    assert response.headers["ratelimit-policy"] == "1000000;w=60"


async def test_request_id_is_echoed_only_when_sane(http: httpx.AsyncClient) -> None:
    """A 1-128 printable-character X-Request-ID is echoed; anything else is replaced."""
    ok = await http.get("/", headers={"X-Request-ID": "trace-abc.123"})
    assert ok.headers["x-request-id"] == "trace-abc.123"
    too_long = await http.get("/", headers={"X-Request-ID": "x" * 129})
    assert UUID4.match(too_long.headers["x-request-id"])


async def test_unknown_path_and_wrong_method(http: httpx.AsyncClient) -> None:
    """Unknown paths are 404 and wrong methods 405, in the error shape."""
    assert_error(await http.get("/v1/nothing"), 404)
    assert_error(await http.get("/v1/download/check"), 405)
    assert_error(await http.delete("/v1/download/initiate"), 405)


async def test_preflight_is_204_and_not_rate_limited(http: httpx.AsyncClient) -> None:
    """Any OPTIONS gets 204 with the CORS policy and no rate-limit headers."""
    response = await http.options(
        "/v1/download/initiate",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = response.headers["access-control-allow-headers"]
    for header in ("Content-Type", "Authorization", "X-Request-ID", "traceparent", "tracestate"):
        assert header in allowed
    assert response.headers["access-control-max-age"] == "86400"
    assert "ratelimit-limit" not in response.headers


async def test_health_reports_each_dependency(http: httpx.AsyncClient, backend_kind: str) -> None:
    """Embedded mode checks storage only; with Redis, redis gets its own key."""
    response = await http.get("/health")
    assert response.status_code == 200
    shared = {"redis": "ok", "queue": "ok"}
    checks = {"storage": "ok"} | (shared if backend_kind != "memory" else {})
    assert response.json() == {"status": "healthy", "checks": checks}


async def test_check_follows_the_mock_rule(http: httpx.AsyncClient) -> None:
    """Ids divisible by 7 exist at downloads/<id>.zip with a stable size; others do not."""
    yes = (await http.post("/v1/download/check", json={"file_id": 70000})).json()
    again = (await http.post("/v1/download/check", json={"file_id": 70000})).json()
    assert yes["available"] is True
    assert yes["s3Key"] == "downloads/70000.zip"
    assert yes["size"] > 0
    assert yes == again
    no = (await http.post("/v1/download/check", json={"file_id": 99999})).json()
    assert no == {"file_id": 99999, "available": False, "s3Key": None, "size": None}
    smallest = (await http.post("/v1/download/check", json={"file_id": 10003})).json()
    assert smallest["available"] is True


@pytest.mark.parametrize(
    "body",
    [
        '{"file_id": "70000"}',
        '{"file_id": 70000.5}',
        '{"file_id": 9999}',
        '{"file_id": 100000001}',
        '{"file_id": true}',
        "{}",
        "[70000]",
        '{"file_id": 70000',
        "",
    ],
)
async def test_check_validation_errors_are_400(http: httpx.AsyncClient, body: str) -> None:
    """Strings, floats, out-of-range ids, missing fields and malformed JSON are all 400."""
    response = await http.post(
        "/v1/download/check", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400)


async def test_check_ignores_unknown_keys(http: httpx.AsyncClient) -> None:
    """Extra keys in a body are ignored, as in the original."""
    response = await http.post("/v1/download/check", json={"file_id": 70000, "extra": [1]})
    assert response.status_code == 200


async def test_non_json_body_is_415(http: httpx.AsyncClient) -> None:
    """A form or text body gets a clear 415."""
    response = await http.post("/v1/download/check", content="file_id=70000")
    body = assert_error(response, 415)
    assert "JSON" in body["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"file_ids": []},
        {"file_ids": list(range(10_000, 11_001))},
        {"file_ids": ["70000"]},
        {"file_ids": [1]},
        {"file_ids": 70000},
        {"file_id": 70000},
    ],
)
async def test_initiate_validation_errors_are_400(
    http: httpx.AsyncClient, body: dict[str, object]
) -> None:
    """file_ids holds 1-1000 valid integer ids."""
    assert_error(await http.post("/v1/download/initiate", json=body), 400)


async def test_sentry_test_raises_an_intentional_500(http: httpx.AsyncClient) -> None:
    """?sentry_test=true (exactly) raises after validation; other values do not."""
    boom = await http.post("/v1/download/check?sentry_test=true", json={"file_id": 70000})
    assert_error(boom, 500)
    fine = await http.post("/v1/download/check?sentry_test=1", json={"file_id": 70000})
    assert fine.status_code == 200
    invalid = await http.post("/v1/download/check?sentry_test=true", json={"file_id": 1})
    assert_error(invalid, 400)


async def test_legacy_start_blocks_then_answers(replica_factory: ReplicaFactory) -> None:
    """The deprecated blocking call still answers with the original's fields."""
    replica = replica_factory(DOWNLOAD_DELAY_MIN_MS="10", DOWNLOAD_DELAY_MAX_MS="50")
    async with httpx.AsyncClient(base_url=replica.url) as client:
        ok = await client.post("/v1/download/start", json={"file_id": 70000})
        missing = await client.post("/v1/download/start", json={"file_id": 99999})
        body = ok.json()
        fetched = await client.get(body["downloadUrl"])
    assert body["status"] == "completed"
    assert fetched.content == demo.content(70000)
    assert body["size"] == len(fetched.content)
    assert body["processingTimeMs"] >= 10
    assert ok.headers["deprecation"] == "true"
    assert missing.json()["status"] == "failed"
    assert missing.json()["downloadUrl"] is None


async def test_slow_request_becomes_504(replica_factory: ReplicaFactory) -> None:
    """A request past REQUEST_TIMEOUT_MS ends with 504 Gateway Timeout (not 500)."""
    replica = replica_factory(
        REQUEST_TIMEOUT_MS="1000", DOWNLOAD_DELAY_MIN_MS="3000", DOWNLOAD_DELAY_MAX_MS="3000"
    )
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        response = await client.post("/v1/download/start", json={"file_id": 70000})
    body = assert_error(response, 504)
    assert body["error"] == "Gateway Timeout"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_rate_limit_per_client(replica_factory: ReplicaFactory) -> None:
    """Remaining counts down from the limit; the excess is 429 with Retry-After; clients differ."""
    replica = replica_factory(
        RATE_LIMIT_MAX_REQUESTS="3", RATE_LIMIT_WINDOW_MS="60000", TRUSTED_PROXIES="127.0.0.1"
    )
    me, other = {"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "203.0.113.10"}
    async with httpx.AsyncClient(base_url=replica.url) as client:
        replies = [await client.get("/", headers=me) for _ in range(4)]
        stranger = await client.get("/", headers=other)
    assert [r.headers["ratelimit-remaining"] for r in replies[:3]] == ["2", "1", "0"]
    assert replies[0].headers["ratelimit-policy"] == "3;w=60"
    assert_error(replies[3], 429)
    assert 1 <= int(replies[3].headers["retry-after"]) <= 60
    assert stranger.status_code == 200


async def test_cors_restricted_origins(replica_factory: ReplicaFactory) -> None:
    """With a list, only listed origins are echoed back."""
    replica = replica_factory(CORS_ORIGINS="https://app.example,https://ops.example")
    async with httpx.AsyncClient(base_url=replica.url) as client:
        allowed = await client.get("/", headers={"Origin": "https://ops.example"})
        denied = await client.get("/", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example"
    assert "access-control-allow-origin" not in denied.headers


def test_bad_setting_stops_start_up_with_its_name() -> None:
    """A bad value stops `delineate serve` with one line naming the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "delineate", "serve"],
        env={"PORT": "99999", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "PORT" in result.stderr
    assert result.stderr.strip().count("\n") == 0


async def test_openapi_describes_every_endpoint(http: httpx.AsyncClient) -> None:
    """/openapi and /openapi.json serve one 3.1 document with the frame schema; /docs renders."""
    doc = (await http.get("/openapi.json")).json()
    assert doc == (await http.get("/openapi")).json()
    assert doc["openapi"].startswith("3.1")
    for path in (
        "/v1/download/check",
        "/v1/download/start",
        "/v1/download/initiate",
        "/v1/download/status/{job_id}",
        "/v1/download/result/{job_id}",
        "/v1/download/cancel/{job_id}",
        "/v1/download/stream/{job_id}",
        "/v1/download/{job_id}",
    ):
        assert path in doc["paths"]
    schemas = doc["components"]["schemas"]
    for name in (
        "SnapshotFrame",
        "ProgressFrame",
        "CompletedFrame",
        "JobSnapshot",
        "ServerMessage",
    ):
        assert name in schemas
    assert doc["paths"]["/v1/download/start"]["post"]["deprecated"] is True
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "openapi.json" in docs.text

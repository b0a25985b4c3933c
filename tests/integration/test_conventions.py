"""The conventions operators expect, on real replicas: liveness and readiness probes,
Prometheus families, standard OTEL_* and SENTRY_* variables, secrets from files, LOG_LEVEL
and the warning for a misspelt setting."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cluster
from tests.support.processes import Replica, started
from tests.support.services import Backend
from tests.support.telemetry import SentryServer, SpanCollector

pytestmark = pytest.mark.integration


async def test_livez_and_readyz_answer_on_a_working_replica(http: httpx.AsyncClient) -> None:
    """/livez is 200 with no dependency checked; /readyz 200 with storage and the queue."""
    live = await http.get("/livez")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["draining"] is False
    assert {"storage", "queue"} <= set(body["checks"])
    assert set(body["checks"].values()) == {"ok"}


async def test_readyz_fails_without_redis_while_livez_holds(
    redis_backend: Backend, cluster: Cluster
) -> None:
    """Redis down: /readyz 503 naming redis (out of the balancer), /livez still 200 (no
    restart); Redis back: ready again. /health keeps the original body shape."""
    (replica,) = cluster(1)
    async with httpx.AsyncClient(base_url=replica.url, timeout=15) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert redis_backend.redis is not None
        redis_backend.redis.stop()
        try:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "not_ready"
            assert ready.json()["checks"]["redis"] == "error"
            assert (await http.get("/livez")).status_code == 200
            health = await http.get("/health")
            assert health.status_code == 503
            assert set(health.json()) == {"status", "checks"}
        finally:
            redis_backend.redis.start()
        async with asyncio.timeout(30):
            while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 (polling)
                await asyncio.sleep(0.2)


async def test_prometheus_families_follow_the_conventions(http: httpx.AsyncClient) -> None:
    """A reconnect Counter (_total), a loop-lag histogram a scrape does not reset, and the
    standard process_* and python_gc_* families."""
    first = await scrape(http)
    await asyncio.sleep(0.3)
    second = await scrape(http)
    assert first["types"]["delineate_broker_reconnects"] == "counter"
    assert "delineate_broker_reconnects_total" in second["values"]
    assert first["types"]["delineate_event_loop_lag_seconds"] == "histogram"
    lag_count = "delineate_event_loop_lag_seconds_count"
    assert first["values"][lag_count] > 0
    # Another scraper's read did not take the first one's observations away.
    assert second["values"][lag_count] >= first["values"][lag_count]
    assert "delineate_event_loop_lag_max_seconds" not in first["types"]
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "python_gc_collections"):
        assert name in first["types"], name


async def scrape(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get("/metrics")).text
    types, values = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return {"types": types, "values": values}


def run_replica(tmp_path: Path, name: str, env: dict[str, str]) -> Replica:
    replica = Replica(name, {"DATA_DIR": str(tmp_path / "data"), **env}, tmp_path)
    started(replica)
    return replica


def json_lines(replica: Replica) -> list[dict[str, Any]]:
    text = replica.log_path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_carry_the_span_id_and_name_misspelt_settings(tmp_path: Path) -> None:
    """An access line has span_id beside trace_id; REDIS_ULR is named at start-up with
    REDIS_URL, in one warning line; real settings and unrelated variables are not."""
    env = {"LOG_FORMAT": "json", "REDIS_ULR": "redis://127.0.0.1:1/0", "HOME_DIR_X": "1"}
    replica = run_replica(tmp_path, "logs", env)
    try:
        response = httpx.get(f"{replica.url}/", headers={"X-Request-ID": "span-log-1"}, timeout=10)
        assert response.status_code == 200
    finally:
        replica.stop()
    lines = json_lines(replica)
    access = [line for line in lines if line.get("request_id") == "span-log-1"]
    assert access
    assert re.fullmatch(r"[0-9a-f]{32}", access[0]["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", access[0]["span_id"])
    warnings = [line for line in lines if line["logger"] == "delineate.settings"]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert "REDIS_ULR" in warnings[0]["message"]
    assert "REDIS_URL" in warnings[0]["message"]


def test_log_level_filters_the_lines(tmp_path: Path) -> None:
    """LOG_LEVEL=WARNING: no info lines (the start-up line, access lines), warnings stay."""
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "warning", "JOB_CONCURENCY": "2"}
    replica = run_replica(tmp_path, "quiet", env)
    try:
        assert httpx.get(f"{replica.url}/", timeout=10).status_code == 200
    finally:
        replica.stop()
    lines = json_lines(replica)
    assert lines, "the warning about JOB_CONCURENCY is expected"
    assert {line["level"] for line in lines} <= {"warning", "error", "critical"}
    assert any("JOB_CONCURRENCY" in line["message"] for line in lines)


def test_secrets_come_from_files(tmp_path: Path) -> None:
    """API_KEYS_FILE turns auth on with the file's (stripped) keys."""
    keys = tmp_path / "api_keys"
    keys.write_text("demo:file-key\n")
    replica = run_replica(tmp_path, "secrets", {"API_KEYS_FILE": str(keys)})
    try:
        with httpx.Client(base_url=replica.url, timeout=10) as http:
            assert http.post("/v1/stream-token").status_code == 401
            allowed = http.post("/v1/stream-token", headers={"X-API-Key": "file-key"})
            assert allowed.status_code == 200
    finally:
        replica.stop()


def test_a_secret_and_its_file_stop_the_start(tmp_path: Path) -> None:
    """Both JWT_SECRET and JWT_SECRET_FILE: the process exits, naming them."""
    secret = tmp_path / "jwt"
    secret.write_text("x" * 40)
    replica = Replica("both", {"JWT_SECRET": "y" * 40, "JWT_SECRET_FILE": str(secret)}, tmp_path)
    with pytest.raises(pytest.fail.Exception):
        replica.start()
    replica.stop()
    assert "JWT_SECRET or JWT_SECRET_FILE" in replica.log_path.read_text()


def test_otel_variables_and_5xx_spans(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are
    honoured; a 500's server span is an error with error.type (a 400's is not) and carries
    client.address."""
    with SpanCollector() as collector:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.url}/custom/traces",
            "OTEL_SERVICE_NAME": "downloads-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        replica = run_replica(tmp_path, "otel", env)
        try:
            url = f"{replica.url}/v1/download/check?sentry_test=true"
            assert httpx.post(url, json={"file_id": 70000}, timeout=10).status_code == 500
            assert httpx.post(f"{replica.url}/v1/download/check", json={"file_id": 1},
                              timeout=10).status_code == 400  # fmt: skip
            spans = wait_for_spans(collector, {"POST /v1/download/check"}, count=2)
        finally:
            replica.stop()
        paths = {path for path, _ in collector.bodies}
    assert paths == {"/custom/traces"}
    failed = [s for s in spans if s["attributes"]["http.response.status_code"].int_value == 500]
    ok = [s for s in spans if s["attributes"]["http.response.status_code"].int_value == 400]
    assert failed
    assert ok
    assert failed[0]["status"] == 2
    assert failed[0]["attributes"]["error.type"].string_value == "500"
    assert ok[0]["status"] != 2
    assert "error.type" not in ok[0]["attributes"]
    assert failed[0]["attributes"]["client.address"].string_value == "127.0.0.1"
    assert failed[0]["service"] == "downloads-eu"
    assert failed[0]["resource"]["deployment.environment"] == "staging"
    assert failed[0]["replica"] == "otel"


def wait_for_spans(collector: SpanCollector, names: set[str], count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in collector.spans() if s["name"] in names]
        if len(spans) >= count:
            return spans
        time.sleep(0.2)
    pytest.fail(f"the collector got no {names} spans")


def test_sentry_release_and_environment(tmp_path: Path) -> None:
    """SENTRY_RELEASE and SENTRY_ENVIRONMENT are on the events."""
    with SentryServer() as sentry:
        env = {
            "SENTRY_DSN": sentry.dsn,
            "SENTRY_RELEASE": "delineate@9.9.9",
            "SENTRY_ENVIRONMENT": "staging",
        }
        replica = run_replica(tmp_path, "sentry", env)
        try:
            url = f"{replica.url}/v1/download/check?sentry_test=true"
            assert httpx.post(url, json={"file_id": 70000}, timeout=10).status_code == 500
            deadline = time.monotonic() + 15
            while not sentry.events() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            replica.stop()
        events = sentry.events()
    assert events
    assert events[0]["release"] == "delineate@9.9.9"
    assert events[0]["environment"] == "staging"

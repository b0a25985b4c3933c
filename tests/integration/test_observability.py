"""Telemetry from real replicas: metrics, trace propagation and export, Sentry events, logs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Cluster
from tests.support.clients import AVAILABLE, initiate, wait_status, ws_collect
from tests.support.processes import Replica, started
from tests.support.telemetry import SentryServer, SpanCollector

pytestmark = pytest.mark.integration
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await http.get("/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_metrics_move_as_a_job_runs(http: httpx.AsyncClient, server: Replica) -> None:
    """/metrics parses; frames, jobs and requests counters move; labels stay bounded."""
    before = await scrape(http)
    job = await initiate(http, AVAILABLE)
    watched = await ws_collect(job["subscribeUrl"])
    await wait_status(http, job["jobId"], {"completed"})
    await asyncio.sleep(0.2)
    after = await scrape(http)
    sent = total(after, "delineate_frames_sent_total") - total(
        before, "delineate_frames_sent_total"
    )
    assert sent >= len(watched.frames)
    finished = total(after, "delineate_jobs_finished_total", status="completed")
    # >=: jobs other tests left running on the shared server may finish meanwhile.
    assert finished >= total(before, "delineate_jobs_finished_total", status="completed") + 1
    assert total(after, "delineate_job_duration_seconds_count") >= 1
    assert total(after, "delineate_fanout_delay_seconds_count") >= len(watched.frames)
    assert total(after, "http_requests_total", path="/v1/download/initiate", status="202") >= 1
    assert (
        total(after, "http_request_duration_seconds_count", path="/v1/download/status/{job_id}")
        >= 1
    )
    assert total(after, "delineate_open_connections", transport="websocket") == 0
    for _, labels in after:
        for _, value in labels:
            assert not UUID.search(value), f"unbounded label value {value}"


async def test_sse_disconnect_frees_the_connection(http: httpx.AsyncClient) -> None:
    """A client that goes away mid-stream is noticed at once (not at the next keepalive)."""
    job = await initiate(http, AVAILABLE)
    async with http.stream("GET", job["streamUrl"]) as response:
        lines = response.aiter_lines()  # keep a reference: a collected iterator closes the stream
        await anext(lines)
        during = total(await scrape(http), "delineate_open_connections", transport="sse")
    await asyncio.sleep(0.5)
    after = total(await scrape(http), "delineate_open_connections", transport="sse")
    assert during >= 1
    assert after == during - 1


async def test_traceparent_is_honoured_and_carried(http: httpx.AsyncClient) -> None:
    """An incoming traceparent's trace id comes back in X-Trace-ID, the job and every frame."""
    response = await http.post(
        "/v1/download/initiate", json={"file_ids": [70000]}, headers={"traceparent": TRACEPARENT}
    )
    assert response.headers["x-trace-id"] == TRACE_ID
    job_id = response.json()["jobId"]
    status = (await http.get(f"/v1/download/status/{job_id}")).json()
    assert status["traceId"] == TRACE_ID
    frames = (await ws_collect(response.json()["subscribeUrl"])).frames
    assert {f["traceId"] for f in frames} == {TRACE_ID}
    other = await http.get("/")
    assert re.fullmatch(r"[0-9a-f]{32}", other.headers["x-trace-id"])
    assert other.headers["x-trace-id"] != TRACE_ID


async def test_one_trace_from_initiate_to_a_job_run_on_another_replica(cluster: Cluster) -> None:
    """OTLP export: the job span is a child of the initiate span although replica B ran it."""
    with SpanCollector() as collector:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "JOB_CONCURRENCY": "1",
            "DOWNLOAD_DELAY_MIN_MS": "3000",
            "DOWNLOAD_DELAY_MAX_MS": "3000",
        }
        (a,) = cluster(1, **env)
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
            busy = await initiate(http, [70000])  # A's only worker is now busy
            await wait_status(http, busy["jobId"], {"processing"})
            (b,) = cluster(1, **env)
            response = await http.post(
                "/v1/download/initiate", json={"file_ids": [70007]},
                headers={"traceparent": TRACEPARENT},
            )  # fmt: skip
            job_id = response.json()["jobId"]
            done = await wait_status(http, job_id, {"completed"}, 30)
        assert done["worker"] == b.name
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spans = [s for s in collector.spans() if s["trace_id"] == TRACE_ID]
            if {"POST /v1/download/initiate", "job.run"} <= {s["name"] for s in spans}:
                break
            await asyncio.sleep(0.2)
    by_name = {s["name"]: s for s in spans}
    initiate_span, job_span = by_name["POST /v1/download/initiate"], by_name["job.run"]
    assert initiate_span["parent_id"] == "00f067aa0ba902b7"  # the client's span
    assert initiate_span["replica"] == a.name
    assert job_span["replica"] == b.name
    assert job_span["parent_id"] == initiate_span["span_id"]
    children = {s["name"] for s in spans if s["parent_id"] == job_span["span_id"]}
    assert {"job.check_files", "job.file", "storage.complete"} <= children


async def test_a_socket_is_one_span_named_by_its_route_in_the_callers_trace(
    cluster: Cluster,
) -> None:
    """A WebSocket's span covers the connection: named by the route template, a child of the
    handshake's traceparent, with the frames it carried (read before the headers are let go)."""
    with SpanCollector() as collector:
        (a,) = cluster(1, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_BSP_SCHEDULE_DELAY="100")
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
            job = await initiate(http, [70000])
            await wait_status(http, job["jobId"], {"completed"}, 30)
        url = f"{a.ws_url}/v1/download/subscribe/{job['jobId']}"
        collected = await ws_collect(url, headers={"traceparent": TRACEPARENT})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spans = [s for s in collector.spans() if s["trace_id"] == TRACE_ID]
            if spans:
                break
            await asyncio.sleep(0.2)
    assert collected.close_code == 1000
    assert [s["name"] for s in spans] == ["WS /v1/download/subscribe/{job_id}"]
    (span,) = spans
    assert span["parent_id"] == "00f067aa0ba902b7"
    assert span["attributes"]["frames.sent"].int_value == len(collected.frames) == 1
    assert span["attributes"]["realtime.transport"].string_value == "websocket"


def test_sentry_gets_the_test_error_and_a_job_crash(tmp_path: Path) -> None:
    """With SENTRY_DSN: the sentry_test 500 and a background job's crash arrive, tagged."""
    data = tmp_path / "data"
    (data / "downloads" / "70007.zip").mkdir(
        parents=True
    )  # a directory: reading it crashes the job
    with SentryServer() as sentry:
        replica = Replica("sentry", {"DATA_DIR": str(data), "SENTRY_DSN": sentry.dsn}, tmp_path)
        started(replica)
        try:
            with httpx.Client(base_url=replica.url, timeout=10) as http:
                boom = http.post("/v1/download/check?sentry_test=true", json={"file_id": 70000},
                                 headers={"traceparent": TRACEPARENT})  # fmt: skip
                job_id = http.post("/v1/download/initiate", json={"file_ids": [70007]}).json()[
                    "jobId"
                ]
                deadline = time.monotonic() + 20
                while http.get(f"/v1/download/status/{job_id}").json()["status"] != "failed":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            replica.stop()  # flushes Sentry
        events = sentry.events()
    assert boom.status_code == 500
    request_event = next(e for e in events if "Sentry test error" in json.dumps(e["exception"]))
    assert request_event["tags"]["request_id"] == boom.headers["x-request-id"]
    assert request_event["tags"]["trace_id"] == TRACE_ID
    job_event = next(e for e in events if e.get("tags", {}).get("job_id") == job_id)
    assert job_event["tags"]["trace_id"]
    assert job_event["tags"]["request_id"]


def test_logs_are_json_lines_with_ids(tmp_path: Path) -> None:
    """Every log line is a JSON object; access and job lines carry their ids; no signed links."""
    replica = Replica("logs", {"DATA_DIR": str(tmp_path / "data"), "LOG_FORMAT": "json"}, tmp_path)
    started(replica)
    try:
        with httpx.Client(base_url=replica.url, timeout=10) as http:
            job_id = http.post("/v1/download/initiate", json={"file_ids": [70000]},
                               headers={"X-Request-ID": "log-test-1"}).json()["jobId"]  # fmt: skip
            deadline = time.monotonic() + 20
            while http.get(f"/v1/download/status/{job_id}").json()["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            link = http.get(f"/v1/download/result/{job_id}").json()["downloadUrl"]
            assert http.get(link).status_code == 200
    finally:
        replica.stop()
    lines = [json.loads(line) for line in replica.log_path.read_text().splitlines() if line.strip()]
    assert all({"timestamp", "level", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line.get("request_id") == "log-test-1"]
    assert access
    assert access[0]["path"] == "/v1/download/initiate"
    assert access[0]["trace_id"]
    assert any(
        line.get("job_id") == job_id and line["message"] == "job completed" for line in lines
    )
    assert "signature=" not in replica.log_path.read_text()

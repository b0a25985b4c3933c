"""The operations dashboard (/ops) in real Chromium, against real replicas sharing a real Redis:
one trace from the page's click to job.run on another replica, errors seen from any replica,
the operator role, and the page's errors reaching Sentry with a feedback dialog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Page

from tests.support.processes import Replica, ReplicaGroup, started
from tests.support.services import RedisServer
from tests.support.telemetry import SentryServer, SpanCollector
from tests.web.conftest import start_download

pytestmark = pytest.mark.integration

TRACE_UI = "http://127.0.0.1:16686/trace/{trace_id}"
SENTRY_UI = "http://sentry.invalid/issues/?query={event_id}"
JWT_SECRET = "ops-test-secret-of-at-least-32-bytes!"
Fleet = Callable[..., Replica]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Replicas sharing one redis-server and one data directory; all stopped afterwards."""
    redis = RedisServer(tmp_path)
    started(redis)
    group = ReplicaGroup(tmp_path)

    def start(**env: str) -> Replica:
        shared = {"REDIS_URL": redis.url, "DATA_DIR": str(tmp_path / "data")}
        return group.start({**shared, "OPS_HEARTBEAT_S": "0.5", **env})

    yield start
    group.stop()
    redis.stop()


def shot(page: Page, artifacts_dir: Path, name: str) -> None:
    shots = artifacts_dir / "browser"
    shots.mkdir(exist_ok=True)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def status_of(replica: Replica, job_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{replica.url}/v1/download/status/{job_id}", timeout=5).json()
    return doc


def wait_for_status(replica: Replica, job_id: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        doc = status_of(replica, job_id)
        return doc if doc["status"] == status else None

    found: dict[str, Any] = wait_for(f"job {job_id} to be {status}", reached)
    return found


def sentry_event(sentry: SentryServer, matches: Callable[[dict[str, Any]], bool]) -> Any:
    return wait_for("a Sentry event", lambda: next(filter(matches, sentry.events()), None))


def test_a_job_from_the_page_shows_in_the_ops_view_with_one_trace_across_replicas(
    fleet: Fleet, artifacts_dir: Path, page: Page
) -> None:
    """The click's browser span, POST initiate on the page's replica and job.run on the other
    replica are one trace, at the OTLP receiver and in the dashboard's waterfall."""
    with SpanCollector() as collector:
        telemetry = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TRACE_UI_URL": TRACE_UI,
        }
        # The page's replica has one slot, held by a long job: the page's job must run on the
        # other replica, started afterwards.
        long_jobs = {"DOWNLOAD_DELAY_MIN_MS": "60000", "DOWNLOAD_DELAY_MAX_MS": "60000"}
        front = fleet(JOB_CONCURRENCY="1", **long_jobs, **telemetry)
        blocker = httpx.post(f"{front.url}/v1/download/initiate", json={"file_ids": [70014]})
        wait_for_status(front, blocker.json()["jobId"], "processing")
        back = fleet(**telemetry)

        page.goto(front.url)
        job_id = start_download(page, "70000 70007")
        done = wait_for_status(front, job_id, "completed")
        assert done["worker"] == back.name
        trace_id = done["traceId"]

        def whole_trace() -> dict[str, dict[str, Any]] | None:
            found = {s["name"]: s for s in collector.spans() if s["trace_id"] == trace_id}
            return found if {"click Start download", "job.run"} <= set(found) else None

        spans = wait_for("the browser span and job.run at the receiver", whole_trace)
        click, initiate = spans["click Start download"], spans["POST /v1/download/initiate"]
        run = spans["job.run"]
        assert click["service"] == "delineate-web"
        assert initiate["parent_id"] == click["span_id"]
        assert initiate["replica"] == front.name
        assert run["parent_id"] == initiate["span_id"]
        assert run["replica"] == back.name
        assert "storage.complete" in spans

        page.goto(f"{front.url}/ops")
        row = f'tr[data-job-id="{job_id}"]'
        page.wait_for_selector(f'{row}[data-status="completed"]', timeout=15_000)
        assert back.name in (page.text_content(row) or "")
        assert page.get_attribute(f"{row} a", "href") == TRACE_UI.format(trace_id=trace_id)
        page.wait_for_selector(f'#replicas [data-replica="{back.name}"]')
        page.wait_for_function(
            "(lines => lines.length >= 12 && lines.every(l => l.points.length >= 6))"
            "([...document.querySelectorAll('.chart polyline')])",
            timeout=15_000,
        )
        shot(page, artifacts_dir, "ops-dashboard")

        page.click(f"{row} button.link")
        page.wait_for_selector('.span-row[data-span="click Start download"]', timeout=10_000)
        page.wait_for_selector(f'.span-row[data-span="job.run"][data-replica="{back.name}"]')
        assert page.text_content("#trace-id") == trace_id
        page.locator("#trace").screenshot(path=str(artifacts_dir / "browser" / "ops-trace.png"))
        # Not left for the replica's stop, which would wait out its drain for the long job.
        httpx.post(f"{front.url}/v1/download/cancel/{blocker.json()['jobId']}", timeout=5)
        wait_for_status(front, blocker.json()["jobId"], "cancelled")
        # Stopped while the receiver is up: their exporters' last flush would otherwise
        # retry against a closed port.
        front.stop()
        back.stop()


def test_a_background_job_error_shows_on_a_replica_that_did_not_run_it(
    fleet: Fleet, tmp_path: Path, artifacts_dir: Path, page: Page
) -> None:
    """A job crashes on one replica; the other's error log shows it with its job, request and
    trace ids, and a link to its Sentry event."""
    (tmp_path / "data" / "downloads" / "70007.zip").mkdir(parents=True)  # reading it crashes
    with SentryServer() as sentry:
        env = {"SENTRY_DSN": sentry.dsn, "SENTRY_UI_URL": SENTRY_UI}
        first, second = fleet(**env), fleet(**env)
        initiated = httpx.post(f"{first.url}/v1/download/initiate", json={"file_ids": [70007]})
        job_id = initiated.json()["jobId"]
        failed = wait_for_status(first, job_id, "failed")
        ran, other = (first, second) if failed["worker"] == first.name else (second, first)
        assert failed["error"]["code"] == "internal_error"

        def crash_entry() -> dict[str, Any] | None:
            errors = httpx.get(f"{other.url}/v1/ops/overview", timeout=5).json()["errors"]
            return next((e for e in errors if e["jobId"] == job_id), None)

        entry = wait_for("the crash in the other replica's error log", crash_entry)
        assert entry["replica"] == ran.name
        assert entry["kind"] == "job"
        assert entry["traceId"] == failed["traceId"]
        assert entry["requestId"]
        assert "IsADirectoryError" in (entry["exception"] or "")
        event = sentry_event(sentry, lambda e: e.get("tags", {}).get("job_id") == job_id)
        assert entry["sentryEventId"] == event["event_id"]
        # No trace exporter here: the replicas still keep the job's spans, for any replica.
        # job.run ends after the failed status and the error entry (the bundle's clean-up).
        expected = {("POST /v1/download/initiate", first.name), ("job.run", ran.name)}

        def kept_spans() -> bool:
            url = f"{other.url}/v1/ops/traces/{entry['traceId']}"
            trace = httpx.get(url, timeout=5).json()
            return expected <= {(s["name"], s["replica"]) for s in trace["spans"]}

        wait_for("the job's spans in the other replica's trace view", kept_spans)

        page.goto(f"{other.url}/ops#errors")
        error_row = f'#error-rows tr:has-text("{job_id}")'
        page.wait_for_selector(error_row, timeout=15_000)
        assert ran.name in (page.text_content(error_row) or "")
        sentry_link = SENTRY_UI.format(event_id=event["event_id"])
        assert page.get_attribute(f"{error_row} a.sentry", "href") == sentry_link
        shot(page, artifacts_dir, "ops-errors")


def test_the_dashboard_is_refused_without_the_operator_role(
    tmp_path: Path, artifacts_dir: Path, page: Page
) -> None:
    """With auth on: no credential 401, an owner's key 403, an operator's key or a JWT with
    the operator role 200; the page asks for a key and says which role is missing."""
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "API_KEYS": "alice:alice-key,boss:boss-key",
        "OPERATORS": "boss",
        "JWT_SECRET": JWT_SECRET,
    }
    replica = started(Replica("auth-ops", env, tmp_path))
    try:
        url = f"{replica.url}/v1/ops/overview"
        assert httpx.get(url).status_code == 401
        refused = httpx.get(url, headers={"X-API-Key": "alice-key"})
        assert refused.status_code == 403
        assert refused.json()["error"] == "Forbidden"
        assert httpx.get(url, headers={"X-API-Key": "boss-key"}).status_code == 200
        claims = {"sub": "carol", "exp": int(time.time()) + 60}
        for roles, status in (([], 403), (["operator"], 200)):
            token = jwt.encode({**claims, "roles": roles}, JWT_SECRET, algorithm="HS256")
            answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == status

        page.goto(f"{replica.url}/ops")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#api-key", "alice-key")
        page.click("#key-form button")
        page.wait_for_function("document.querySelector('#feed').textContent.includes('role')")
        assert page.text_content("#feed") == "operator role needed"
        assert "operator role" in (page.text_content("#key-error") or "")
        assert page.locator("#replicas .replica").count() == 0
        shot(page, artifacts_dir, "ops-refused")
        page.fill("#api-key", "boss-key")
        page.click("#key-form button")
        page.wait_for_selector(f'#replicas [data-replica="{replica.name}"]')
        assert page.is_hidden("#key-form")
    finally:
        replica.stop()


def test_page_errors_reach_sentry_tagged_with_the_trace_and_ask_for_feedback(
    tmp_path: Path, artifacts_dir: Path, page: Page
) -> None:
    """A failed API call (the replica's Redis is gone: a real 503) and an uncaught error
    reach the browser DSN with the trace id; the dialog sends what the person typed as a
    user report of that event. No request interception: Chromium's keepalive fetches,
    which the page's reports are, can stall or fail while a test intercepts requests."""
    redis = started(RedisServer(tmp_path, name="redis-sentry"))
    with SentryServer() as sentry:
        env = {
            "DATA_DIR": str(tmp_path / "data"), "REDIS_URL": redis.url,
            "BROWSER_SENTRY_DSN": sentry.dsn,
        }  # fmt: skip
        replica = started(Replica("browser-sentry", env, tmp_path))
        try:
            traces: list[str] = []
            page.on(
                "request",
                lambda r: traces.append(r.headers.get("traceparent", "-").split("-")[1]),
            )
            page.goto(replica.url)
            page.wait_for_selector("#start:enabled")
            redis.stop()
            with page.expect_request("**/v1/download/initiate") as sent:
                page.fill("#file-ids", "70000")
                page.click("#start")
            trace_id = sent.value.headers["traceparent"].split("-")[1]
            api_event = sentry_event(sentry, lambda e: e["tags"].get("trace_id") == trace_id)
            assert "POST /v1/download/initiate: answered 503" in json.dumps(api_event["exception"])
            page.wait_for_selector("dialog#feedback[open]")
            assert page.text_content("dialog#feedback code") == trace_id
            page.fill("#feedback-text", "I pressed Start download")
            shot(page, artifacts_dir, "page-feedback-dialog")
            page.click("dialog#feedback button[value=send]")

            def reported() -> bool:
                with sentry.lock:
                    bodies = [body for _, body in sentry.bodies]
                return any(
                    b'"user_report"' in body
                    and api_event["event_id"].encode() in body
                    and b"I pressed Start download" in body
                    for body in bodies
                )

            wait_for("the user report", reported)
            page.evaluate("setTimeout(() => { throw new Error('boom from the test') })")
            uncaught = sentry_event(sentry, lambda e: "boom from the test" in json.dumps(e))
            assert uncaught["tags"]["trace_id"] in traces  # the trace of the page's last call
        finally:
            replica.stop()
            redis.stop()

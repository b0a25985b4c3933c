"""The browser page in real Chromium: live bars, one socket, reloads, fallbacks, replica loss."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import Cluster, EdgeFactory, ReplicaFactory
from tests.support.processes import Replica
from tests.web.conftest import progress_of, start_download, wait_for_progress

pytestmark = pytest.mark.integration
# `page` comes last in every signature so it is torn down first: its screenshot shows the
# page while the servers behind it are still up.
SLOW = {"DOWNLOAD_DELAY_MIN_MS": "4000", "DOWNLOAD_DELAY_MAX_MS": "4000"}


def test_job_reaches_100_and_the_link_downloads_the_bundle(server: Replica, page: Page) -> None:
    """Start from the page; the bar reaches 100% and the link downloads a valid bundle."""
    page.goto(server.url)  # a browser asking for HTML gets the page at /
    job_id = start_download(page, "70000, 70007 99999")
    page.wait_for_selector(f'.job[data-job-id="{job_id}"].completed', timeout=30_000)
    assert progress_of(page, job_id) == 100
    card = f'.job[data-job-id="{job_id}"]'
    assert "99999 does not exist" in (page.text_content(f"{card} .files") or "")
    with page.expect_download() as info:
        page.click(f"{card} a.download")
    archive = zipfile.ZipFile(io.BytesIO(info.value.path().read_bytes()))
    assert sorted(archive.namelist()) == ["70000.zip", "70007.zip"]
    assert len(page.text_content(f"{card} .request-id") or "") == 36  # a uuid
    assert len(page.text_content(f"{card} .trace-id") or "") == 32
    assert "healthy" in (page.text_content("#health") or "")


def test_three_jobs_progress_at_once_over_one_socket(
    replica_factory: ReplicaFactory, page: Page
) -> None:
    """Three cards move together, carried by a single WebSocket."""
    replica = replica_factory(**SLOW)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{replica.url}/app/")
    ids = [start_download(page, str(file_id)) for file_id in (70000, 70007, 70014)]
    page.wait_for_function(
        "ids => ids.every(id => Number(document.querySelector(`.job[data-job-id='${id}'] .bar`)"
        ".getAttribute('aria-valuenow')) > 0)",
        arg=ids,
        timeout=15_000,
    )
    assert page.locator(".job.processing").count() == 3  # all three moving at the same time
    page.wait_for_function(
        "document.querySelectorAll('.job.completed').length === 3", timeout=30_000
    )
    # One socket; its stream token (issued with auth off too) is in the query.
    assert [url.split("?")[0] for url in sockets] == [f"{replica.ws_url}/v1/ws"]
    assert "?token=" in sockets[0]
    assert page.get_attribute(".bar", "role") == "progressbar"


def test_reload_mid_job_resumes_without_going_back(
    replica_factory: ReplicaFactory, page: Page
) -> None:
    """After a reload the job is still there, resumes from its last seq, and never regresses."""
    replica = replica_factory(**SLOW)
    page.goto(f"{replica.url}/app/")
    job_id = start_download(page, "70000 70007")
    wait_for_progress(page, job_id, above=24)
    before = progress_of(page, job_id)
    page.reload()
    seen = [progress_of(page, job_id)]
    deadline = time.monotonic() + 30
    while seen[-1] < 100 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
        seen.append(progress_of(page, job_id))
    assert seen[0] >= before
    assert seen == sorted(seen)  # never backwards
    assert seen[-1] == 100


def test_falls_back_to_sse_when_websocket_is_blocked(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory, page: Page
) -> None:
    """Behind a proxy that refuses upgrades the page switches to SSE and still completes."""
    proxy = edge_factory([replica_factory()], websocket=False)
    page.goto(f"{proxy.url}/app/")
    page.wait_for_function(
        "document.querySelector('#transport').dataset.mode === 'sse'", timeout=15_000
    )
    job_id = start_download(page, "70000")
    page.wait_for_selector(f'.job[data-job-id="{job_id}"].completed', timeout=30_000)
    assert "SSE" in (page.text_content("#transport") or "")


def test_killing_the_replica_holding_the_socket_does_not_stop_the_bar(
    cluster: Cluster, edge_factory: EdgeFactory, page: Page
) -> None:
    """Through nginx with 2 replicas: the page's replica dies mid-job, the bar still completes."""
    primary, spare = cluster(2, JOB_LEASE_MS="1500", **SLOW)
    # Everything goes to `primary` while it lives, so the page's socket is certainly there.
    proxy = edge_factory([primary, spare], upstream_params={1: "backup"})
    page.goto(f"{proxy.url}/app/")
    job_id = start_download(page, "70000 70007")
    wait_for_progress(page, job_id, above=0)
    primary.kill()
    page.wait_for_selector(f'.job[data-job-id="{job_id}"].completed', timeout=45_000)
    assert progress_of(page, job_id) == 100
    status = httpx.get(f"{proxy.url}/v1/download/status/{job_id}", timeout=5).json()
    assert status["status"] == "completed"


def test_with_auth_on_the_page_asks_for_a_key_and_streams_with_a_token(
    replica_factory: ReplicaFactory, page: Page
) -> None:
    """The page cannot put a key on a WebSocket: it asks for the key, keeps it in the tab,
    and opens the socket with a short-lived stream token."""
    replica = replica_factory(API_KEYS="browser:browser-key")
    page.goto(replica.url)
    page.wait_for_selector("#key-form:not([hidden])")
    assert page.text_content("#transport") == "sign-in needed"
    page.fill("#api-key", "not-the-key")
    page.click("#use-key")
    page.wait_for_selector("#key-error:not([hidden])")
    assert page.text_content("#key-error") == "unknown API key"
    page.fill("#api-key", "browser-key")
    page.click("#use-key")
    page.wait_for_selector("#key-form", state="hidden")
    page.wait_for_function(
        "document.querySelector('#transport').textContent === 'live · WebSocket'"
    )
    job_id = start_download(page, "70000")
    page.wait_for_selector(f'.job[data-job-id="{job_id}"].completed', timeout=30_000)
    assert progress_of(page, job_id) == 100
    assert page.evaluate("sessionStorage.getItem('delineate.apiKey')") == "browser-key"
    assert "browser-key" not in page.evaluate("JSON.stringify(localStorage)")

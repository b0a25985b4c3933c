"""The page's transport ladder in real Chromium: honest "live", stepping down, climbing back."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, WebSocketRoute

from tests.web.conftest import (
    SLOW,
    EmbeddedFactory,
    shot_path,
    start_download,
    wait_for_progress,
    wait_for_state,
)

pytestmark = pytest.mark.integration
# Every text the transport pill shows, in order (a MutationObserver set up before the page runs).
RECORD_PILL = """
window.__pill = [];
new MutationObserver(() => {
  const pill = document.querySelector('#transport');
  if (pill && window.__pill.at(-1) !== pill.textContent) window.__pill.push(pill.textContent);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def mode(page: Page) -> str:
    return page.get_attribute("#transport", "data-mode") or ""


def wait_for_mode(page: Page, wanted: str, *, live: bool, timeout: float) -> None:
    page.wait_for_function(
        "([m, l]) => { const p = document.querySelector('#transport');"
        " return p.dataset.mode === m && p.dataset.live === l; }",
        arg=[wanted, "true" if live else "false"],
        timeout=timeout,
    )


def test_refused_websocket_and_aborted_sse_fall_to_polling_and_climb_back(
    embedded: EmbeddedFactory, artifacts_dir: Path, page: Page
) -> None:
    """WebSocket refused and SSE aborted at the network level: the page polls within seconds,
    never claims "live" meanwhile, and is back on the WebSocket once it returns."""
    replica = embedded(**SLOW)
    blocked = {"on": True}

    def socket(ws: WebSocketRoute) -> None:
        if blocked["on"]:
            ws.close()
        else:
            ws.connect_to_server()

    def stream(route: Route) -> None:
        if blocked["on"]:
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route_web_socket(re.compile(r".*/v1/ws\b.*"), socket)
    page.route(re.compile(r".*/v1/download/stream/.*"), stream)
    page.add_init_script(RECORD_PILL)
    page.goto(f"{replica.url}/app/")
    job_id = start_download(page, "70000")
    started = time.monotonic()
    wait_for_mode(page, "polling", live=False, timeout=15_000)
    assert time.monotonic() - started < 12  # "a few seconds": SSE had its silence window
    assert "polling" in (page.text_content("#transport") or "")
    wait_for_progress(page, job_id, above=0)  # polling carries the job meanwhile
    said: list[str] = page.evaluate("window.__pill")
    assert not [text for text in said if text.startswith("live")], said
    page.screenshot(path=str(shot_path(artifacts_dir, "transport-polling")))

    blocked["on"] = False
    wait_for_mode(page, "websocket", live=True, timeout=30_000)
    assert page.text_content("#transport") == "live · WebSocket"
    before = page.get_attribute(f'.job[data-job-id="{job_id}"] .bar', "aria-valuenow")
    wait_for_progress(page, job_id, above=float(before or 0))  # frames flow over the socket


def test_a_restart_marks_the_lost_job_gone_and_the_page_goes_live_again(
    embedded: EmbeddedFactory, artifacts_dir: Path, page: Page
) -> None:
    """The server restarts without the job: its card says it is gone (not "queued 40%"), and
    the transport climbs back to a live WebSocket by itself."""
    replica = embedded(**SLOW)
    page.goto(replica.url)
    job_id = start_download(page, "70000 70007")
    wait_for_progress(page, job_id, above=0)
    wait_for_mode(page, "websocket", live=True, timeout=10_000)
    replica.kill()
    page.wait_for_function("document.querySelector('#transport').dataset.live === 'false'")
    page.screenshot(path=str(shot_path(artifacts_dir, "transport-server-down")))
    embedded(port=replica.port, **SLOW)  # the embedded store forgets every job
    wait_for_state(page, job_id, "gone", timeout=30_000)
    card = f'.job[data-job-id="{job_id}"]'
    assert (page.text_content(f"{card} .badge") or "").strip().endswith("Gone")
    assert "no longer has this download" in (page.text_content(f"{card} .note") or "")
    assert page.is_visible(f"{card} .forget")
    assert not page.is_visible(f"{card} .cancel")
    wait_for_mode(page, "websocket", live=True, timeout=30_000)
    assert page.text_content("#summary") == "1 gone"

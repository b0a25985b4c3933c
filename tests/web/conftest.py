"""Real Chromium (Debian's), driven by Playwright; every test leaves a screenshot behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.processes import Replica, ReplicaGroup, require_binary

# As the machine notes advise: no sandbox as root, and no background traffic to the internet.
SLOW = {"DOWNLOAD_DELAY_MIN_MS": "25000", "DOWNLOAD_DELAY_MAX_MS": "25000"}
"""Jobs that outlast a test: cards stay in their running state while the test looks."""
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


# Function scope on purpose: Playwright's sync API runs an event loop in this thread while it
# is open, which would break every asyncio test that runs after it.
@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def _page(
    browser: Browser, artifacts_dir: Path, name: str, width: int, height: int
) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": height})
    opened = context.new_page()
    yield opened
    opened.screenshot(path=str(shot_path(artifacts_dir, name)), full_page=True)
    context.close()


@pytest.fixture
def page(browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from _page(browser, artifacts_dir, request.node.name, 900, 1000)


@pytest.fixture
def phone(browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-sized page (390x844, an iPhone 12-15's CSS viewport)."""
    yield from _page(browser, artifacts_dir, request.node.name, 390, 844)


def shot_path(artifacts_dir: Path, name: str) -> Path:
    shots = artifacts_dir / "browser"
    shots.mkdir(exist_ok=True)
    return shots / f"{name}.png"


EmbeddedFactory = Callable[..., Replica]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedFactory]:
    """Replicas on the embedded store (no Redis): a restart forgets every job, and links are
    the server's own signed ``/v1/files/`` URLs. ``port`` restarts one on a known port."""
    group = ReplicaGroup(tmp_path, "embedded")

    def start(port: int | None = None, **env: str) -> Replica:
        return group.start({"DATA_DIR": str(tmp_path / "data"), **env}, port)

    yield start
    group.stop()


def start_download(page: Page, ids: str) -> str:
    """Type ids, press the button, return the new job's id (new cards go on top)."""
    before = page.locator(".job[data-job-id]").count()
    page.fill("#file-ids", ids)
    page.click("#start")
    page.wait_for_function(
        "n => document.querySelectorAll('.job[data-job-id]').length > n", arg=before
    )
    job_id: str = page.get_attribute(".job[data-job-id]", "data-job-id") or ""
    return job_id


def state_of(page: Page, job_id: str) -> str:
    return page.get_attribute(f'.job[data-job-id="{job_id}"]', "data-state") or ""


def wait_for_state(page: Page, job_id: str, state: str, timeout: float = 30_000) -> None:
    page.wait_for_selector(f'.job[data-job-id="{job_id}"][data-state="{state}"]', timeout=timeout)


def progress_of(page: Page, job_id: str) -> float:
    value: Any = page.get_attribute(f'.job[data-job-id="{job_id}"] .bar', "aria-valuenow")
    return float(value)


def wait_for_progress(page: Page, job_id: str, *, above: float) -> None:
    selector = f".job[data-job-id='{job_id}'] .bar"
    page.wait_for_function(
        "([sel, min]) => Number(document.querySelector(sel).getAttribute('aria-valuenow')) > min",
        arg=[selector, above],
        timeout=15_000,
    )

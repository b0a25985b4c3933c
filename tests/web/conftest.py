"""Real Chromium (Debian's), driven by Playwright; every test leaves a screenshot behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.processes import require_binary

# As the machine notes advise: no sandbox as root, and no background traffic to the internet.
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


@pytest.fixture
def page(browser: Browser, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    opened = context.new_page()
    yield opened
    shots = artifacts_dir / "browser"
    shots.mkdir(exist_ok=True)
    opened.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    context.close()


def start_download(page: Page, ids: str) -> str:
    """Type ids, press the button, return the new job's id."""
    page.fill("#file-ids", ids)
    page.click("#start")
    card = page.wait_for_selector(".job[data-job-id]")
    assert card is not None
    job_id: str = card.get_attribute("data-job-id") or ""
    return job_id


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

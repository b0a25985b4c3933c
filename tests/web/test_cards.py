"""The job cards in real Chromium: states in colour and words, order, links, focus, phones."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route

from tests.web.conftest import (
    SLOW,
    EmbeddedFactory,
    shot_path,
    start_download,
    wait_for_progress,
    wait_for_state,
)

pytestmark = pytest.mark.integration


def card(job_id: str) -> str:
    return f'.job[data-job-id="{job_id}"]'


def order(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(".job", "cards => cards.map(c => c.dataset.jobId)")
    return ids


def focused(page: Page) -> dict[str, str]:
    """What has the keyboard focus: its class, aria-label and the job card it sits in."""
    found: dict[str, str] = page.evaluate(
        "() => { const el = document.activeElement; const job = el.closest('.job');"
        " return { cls: el.className, id: el.id, label: el.getAttribute('aria-label') || '',"
        " job: job ? job.dataset.jobId : '' }; }"
    )
    return found


def tab_to(page: Page, selector: str) -> None:
    """Press Tab until ``selector`` has the focus (a bounded number of times)."""
    for _ in range(40):
        if page.evaluate("sel => document.activeElement.matches(sel)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_three_reloads_keep_the_order_and_finished_clocks_stop(
    embedded: EmbeddedFactory, page: Page
) -> None:
    """Newest first, before and after each of three reloads; a finished card's time is fixed."""
    replica = embedded()
    page.goto(replica.url)
    started = [start_download(page, ids) for ids in ("70000", "70007", "70014")]
    page.wait_for_function("document.querySelectorAll('[data-state=completed]').length === 3")
    assert order(page) == started[::-1]
    took = page.text_content(f"{card(started[0])} .numbers")
    assert "took" in (took or "")
    for _ in range(3):
        page.wait_for_timeout(1100)  # long enough for a running clock to move on
        page.reload()
        page.wait_for_selector(".job")
        assert order(page) == started[::-1]
        assert page.text_content(f"{card(started[0])} .numbers") == took
    assert page.text_content("#summary") == "3 ready"


def test_an_expired_link_is_fetched_fresh_and_saved_under_a_friendly_name(
    embedded: EmbeddedFactory, page: Page
) -> None:
    """The saved link has expired: the card says so, and a click asks `result` for a fresh
    link; the bundle saves as delineate-<ids>.zip, not <uuid>.zip."""
    replica = embedded()
    page.goto(replica.url)
    job_id = start_download(page, "70000 70007")
    wait_for_state(page, job_id, "completed")
    assert "link valid until" in (page.text_content(f"{card(job_id)} .expiry") or "")
    page.evaluate(
        # The page saves what it holds when it unloads: age the link it holds.
        """id => { const doc = window.delineate.jobs.get(id).doc;
        doc.downloadUrl = doc.downloadUrl.replace(/expires=\\d+/, 'expires=1000000000');
        doc.expiresAt = '2001-09-09T01:46:40Z'; }""",
        job_id,
    )
    page.reload()
    assert "link expired" in (page.text_content(f"{card(job_id)} .expiry") or "")
    fresh = re.compile(r".*/v1/download/result/.*")
    with page.expect_response(fresh) as result, page.expect_download() as info:
        page.click(f"{card(job_id)} a.download")
    assert result.value.status == 200
    assert info.value.suggested_filename == "delineate-70000-70007.zip"
    archive = zipfile.ZipFile(io.BytesIO(info.value.path().read_bytes()))
    assert sorted(archive.namelist()) == ["70000.zip", "70007.zip"]
    assert "link valid until" in (page.text_content(f"{card(job_id)} .expiry") or "")


def test_partial_and_failed_jobs_say_what_happened(
    embedded: EmbeddedFactory, artifacts_dir: Path, page: Page
) -> None:
    """One of two files missing is a warned "Ready, files missing", not a green "completed";
    a failed job says why, with no "0 B / 0 B"; the summary counts both; Clear finished
    empties the list and leaves focus on its heading."""
    replica = embedded()
    page.goto(replica.url)
    partial = start_download(page, "70000 99999")
    failed = start_download(page, "10001")
    wait_for_state(page, partial, "partial")
    wait_for_state(page, failed, "failed")
    assert (page.text_content(f"{card(partial)} .badge") or "").strip() == "!Ready, files missing"
    warning = page.text_content(f"{card(partial)} .note") or ""
    assert "1 of 2 files did not exist (99999)" in warning
    assert page.is_visible(f"{card(partial)} a.download")
    assert page.text_content(f"{card(failed)} .note") == "None of the requested files exist."
    numbers = page.text_content(f"{card(failed)} .numbers") or ""
    assert numbers.startswith("failed after")
    assert "0 B" not in numbers
    assert "ETA" not in numbers
    assert page.text_content("#summary") == "1 ready with files missing, 1 failed"
    colours = page.eval_on_selector_all(
        ".job .bar-fill", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert len(set(colours)) == 2  # distinct colours, as well as distinct words
    page.screenshot(path=str(shot_path(artifacts_dir, "states-partial-failed")))
    page.click("#clear")
    assert page.locator(".job").count() == 0
    assert page.text_content("#summary") == "No downloads yet."
    assert focused(page)["id"] == "jobs-title"


def test_cancel_by_keyboard_asks_first_and_keeps_focus_on_the_card(
    embedded: EmbeddedFactory, artifacts_dir: Path, page: Page
) -> None:
    """Keyboard only: Cancel asks first (Escape keeps the job), the answer leaves focus on
    the same card's Remove, buttons name the files (never a uuid), and Remove leaves focus
    on the list, not on <body>."""
    replica = embedded(**SLOW)
    page.goto(replica.url)
    tab_to(page, "#file-ids")
    page.keyboard.type("70000 70007")
    page.keyboard.press("Enter")
    page.wait_for_selector(".job")
    job_id = page.get_attribute(".job", "data-job-id") or ""
    assert focused(page)["id"] == "file-ids"  # starting a download does not move the person
    wait_for_progress(page, job_id, above=0)
    tab_to(page, f"{card(job_id)} .cancel")
    assert focused(page)["label"] == "Cancel download of 2 files (70000, 70007)"
    assert job_id not in (page.get_attribute(f"{card(job_id)} .bar", "aria-label") or "")
    page.keyboard.press("Enter")
    assert "confirm-yes" in focused(page)["cls"]
    page.keyboard.press("Escape")
    assert "cancel" in focused(page)["cls"].split()
    assert page.get_attribute(card(job_id), "data-state") == "processing"
    page.keyboard.press("Enter")
    page.screenshot(path=str(shot_path(artifacts_dir, "cancel-confirm")))
    page.keyboard.press("Enter")
    wait_for_state(page, job_id, "cancelled")
    now = focused(page)
    assert now["job"] == job_id
    assert "forget" in now["cls"].split()
    assert now["label"] == "Remove 2 files (70000, 70007) from this list"
    states = page.eval_on_selector_all(
        f"{card(job_id)} .fstate", "els => els.map(e => e.textContent)"
    )
    assert not [s for s in states if "downloading" in s or "processing" in s], states
    page.screenshot(path=str(shot_path(artifacts_dir, "cancelled")))
    page.keyboard.press("Enter")
    assert page.locator(".job").count() == 0
    assert focused(page)["id"] == "jobs-title"


def test_a_phone_shows_a_big_job_without_wrapping_figures(
    embedded: EmbeddedFactory, phone: Page
) -> None:
    """390x844: the form leaves room for the jobs, no figure wraps ("ETA / 28s"), nothing
    scrolls sideways, and a 40-file job has a short title and a collapsed file list."""
    replica = embedded(**SLOW)
    phone.goto(replica.url)
    ids = [70000 + 7 * i for i in range(40)]
    job_id = start_download(phone, " ".join(map(str, ids)))
    phone.wait_for_function(
        f"document.querySelector('{card(job_id)} .numbers').textContent.includes('left')",
        timeout=15_000,
    )
    form_bottom = phone.eval_on_selector("#start-form", "f => f.getBoundingClientRect().bottom")
    assert form_bottom < 844 * 0.4
    title = phone.text_content(f"{card(job_id)} .job-title")
    assert title == "40 files (70000, 70007, 70014 and 37 more)"
    assert phone.eval_on_selector(f"{card(job_id)} details.files", "d => d.open") is False
    summary = phone.text_content(f"{card(job_id)} .files-summary") or ""
    assert re.fullmatch(r"40 files, [\d.]+ MB", summary)
    whole = phone.eval_on_selector_all(
        ".fig, .badge, .pill, .job-title, button",
        "els => els.filter(e => e.offsetParent)"
        ".map(e => [e.textContent, e.getClientRects().length])",
    )
    assert len([w for w in whole if w[1] == 1]) >= 6
    assert [w for w in whole if w[1] != 1 and w[0].count(" ") < 3] == []  # short texts: one line
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.text_content("#summary") == "1 running"


def test_bad_ids_and_no_network_get_plain_words(embedded: EmbeddedFactory, page: Page) -> None:
    """Mistakes are explained in words a person understands; the server's validation text and
    the browser's "Failed to fetch" never reach the page."""
    replica = embedded(MAX_BUNDLE_BYTES="1000")
    page.goto(replica.url)

    def said(ids: str) -> str:
        page.evaluate("document.querySelector('#form-error').hidden = true")
        page.fill("#file-ids", ids)
        page.click("#start")
        page.wait_for_selector("#form-error:not([hidden])")
        return page.text_content("#form-error") or ""

    assert said("70000, abc") == (
        "“abc” is not a file id: use whole numbers from 10000 to 100000000."
    )
    too_many = " ".join(str(10000 + i) for i in range(1001))
    assert said(too_many) == "At most 1000 files at once; you entered 1001."
    assert said("70000") == "These files are too large for one bundle; ask for fewer at once."

    def offline(route: Route) -> None:
        route.abort("internetdisconnected")

    page.route("**/v1/download/initiate", offline)
    assert said("70007").startswith("Can't reach the server.")
    assert page.locator(".job").count() == 0
    assert json.loads(page.evaluate("localStorage.getItem('delineate.jobs.v1') || '[]'")) == []

"""The page's rules for stream epochs and lost jobs (docs/page.md), in Chromium, as pure logic."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from tests.web.conftest import EmbeddedFactory

pytestmark = pytest.mark.integration
CASES = [
    # (kept epoch, kept seq, frame, duplicate?)
    (None, 5, {"type": "progress", "seq": 5}, True),  # a server without epochs: seq alone
    (None, 5, {"type": "progress", "seq": 6}, False),
    ("a", 5, {"type": "progress", "epoch": "a", "seq": 4}, True),
    ("a", 5, {"type": "snapshot", "epoch": "a", "seq": 5}, False),  # a snapshot may repeat
    ("a", 5, {"type": "snapshot", "epoch": "a", "seq": 4}, True),
    ("a", 5, {"type": "snapshot", "epoch": "b", "seq": 1}, False),  # the job moved on: take it
    ("a", 5, {"type": "progress", "epoch": "b", "seq": 2}, False),
    (None, 5, {"type": "progress", "epoch": "b", "seq": 2}, False),  # the server gained epochs
]


def test_a_frame_is_a_duplicate_only_in_the_kept_epoch(
    embedded: EmbeddedFactory, page: Page
) -> None:
    """Same epoch and seq at or below the kept one: dropped; any other epoch: applied; and
    the resume position names the epoch once there is one."""
    page.goto(embedded().url)
    for epoch, seq, frame, duplicate in CASES:
        kept = {"epoch": epoch, "lastSeq": seq}
        got = page.evaluate("([k, f]) => window.delineate.isDuplicate(k, f)", [kept, frame])
        assert got is duplicate, (kept, frame)
    position = "j => window.delineate.streamPosition(j)"
    assert page.evaluate(position, {"epoch": "e1", "lastSeq": 7}) == "e1:7"
    assert page.evaluate(position, {"epoch": None, "lastSeq": 7}) == 7


def test_a_job_the_server_lost_is_gone_not_failed(embedded: EmbeddedFactory, page: Page) -> None:
    """A `failed` frame with `job_lost` reads as Gone; another failure stays Failed."""
    page.goto(embedded().url)
    state = "d => window.delineate.stateOf({ doc: d, gone: false })"
    lost = {"status": "failed", "error": {"code": "job_lost", "message": "lost"}, "files": []}
    assert page.evaluate(state, lost) == "gone"
    other = {**lost, "error": {"code": "storage_error", "message": "no"}}
    assert page.evaluate(state, other) == "failed"

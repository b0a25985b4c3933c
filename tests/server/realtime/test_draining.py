"""The replica's drain as the event streams see it: every registered stop is called once."""

from __future__ import annotations

import pytest

from delineate.realtime.draining import Draining


def test_a_drain_stops_every_stream_registered_and_only_those() -> None:
    draining = Draining()
    stopped: list[str] = []
    draining.add(lambda: stopped.append("a"))
    gone = lambda: stopped.append("gone")  # noqa: E731
    draining.add(gone)
    draining.discard(gone)  # that stream ended before the drain
    assert not draining.is_set()
    assert stopped == []
    draining.set()
    assert draining.is_set()
    assert stopped == ["a"]
    draining.set()  # a second SIGTERM stops nothing twice
    assert stopped == ["a"]


def test_a_stream_that_starts_during_the_drain_is_stopped_at_once() -> None:
    draining = Draining()
    draining.set()
    stopped: list[str] = []
    draining.add(lambda: stopped.append("late"))
    assert stopped == ["late"]
    assert len(draining) == 0


def test_one_streams_failing_stop_does_not_keep_the_others_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    draining = Draining()
    stopped: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    draining.add(broken)
    draining.add(lambda: stopped.append("b"))
    draining.set()
    assert stopped == ["b"]
    assert "stopping a stream for the drain failed" in caplog.text

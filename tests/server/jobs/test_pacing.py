"""Throttling of progress frames and pacing of simulated work (pure, with a fake clock)."""

from server.jobs.emitter import Throttle
from server.jobs.runner import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_allows_one_event_per_interval() -> None:
    """Within an interval only the first event passes; the held-back one is remembered."""
    clock = Clock()
    throttle = Throttle(0.1, clock)
    assert throttle.ready()
    clock.now = 0.05
    assert not throttle.ready()
    assert throttle.pending
    clock.now = 0.1
    assert throttle.ready()
    assert not throttle.pending


def test_pacer_spreads_time_over_bytes() -> None:
    """Half the bytes are due at half the time; being late means no wait."""
    clock = Clock()
    pacer = Pacer(10.0, 1000, clock)
    assert pacer.delay_after(500) == 5.0
    clock.now = 9.0
    assert pacer.delay_after(250) == 0.0
    assert pacer.delay_after(250) == 1.0

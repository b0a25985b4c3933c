"""Throttling of progress frames and pacing of simulated work (pure, with a fake clock)."""

import itertools
import random

from delineate.jobs.emitter import Throttle
from delineate.jobs.runner import Pacer


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


def test_events_paced_at_the_interval_all_pass_despite_jitter() -> None:
    """The runner's chunks come once per interval, each a few ms late (sleep overshoot, the
    write before the check): every one of them gets its progress frame. Measured from the
    last frame instead, about half were held back."""
    clock = Clock()
    throttle = Throttle(0.5, clock)
    rng = random.Random(7)
    passed = 0
    for n in range(200):
        clock.now = n * 0.5 + rng.uniform(0, 0.02)
        passed += throttle.ready()
    assert passed == 200


def test_a_busy_caller_gets_one_event_per_interval_on_average() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock)
    times = []
    for step in range(10_000):  # an event every millisecond for 10 s
        clock.now = step / 1000
        if throttle.ready():
            times.append(clock.now)
    assert len(times) == 21  # 0, ~0.45, ~0.95, ... ~9.95: on the grid, not drifting
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.4 * 0.5


def test_after_a_pause_the_grid_restarts_without_a_burst() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock)
    assert throttle.ready()
    clock.now = 3.0  # nothing for six intervals
    assert throttle.ready()
    clock.now = 3.1  # no catching up on the missed ones
    assert not throttle.ready()
    clock.now = 3.46
    assert throttle.ready()


def test_pacer_spreads_time_over_bytes() -> None:
    """Half the bytes are due at half the time; being late means no wait."""
    clock = Clock()
    pacer = Pacer(10.0, 1000, clock)
    assert pacer.delay_after(500) == 5.0
    clock.now = 9.0
    assert pacer.delay_after(250) == 0.0
    assert pacer.delay_after(250) == 1.0

"""Fixed-window rate limiting per client (pure)."""

from delineate.ratelimit import FixedWindowLimiter


def test_counts_per_client_within_a_window() -> None:
    """The limit applies per client; remaining counts down; the excess is refused."""
    limiter = FixedWindowLimiter(limit=2, window_s=60)
    first = limiter.hit_now("a", now=0)
    assert (first.allowed, first.remaining, first.reset_s) == (True, 1, 60)
    assert limiter.hit_now("a", now=1).allowed
    third = limiter.hit_now("a", now=2)
    assert (third.allowed, third.remaining) == (False, 0)
    assert limiter.hit_now("b", now=2).allowed


def test_new_window_resets_the_count() -> None:
    """A client refused in one window is allowed in the next."""
    limiter = FixedWindowLimiter(limit=1, window_s=10)
    limiter.hit_now("a", now=5)
    assert not limiter.hit_now("a", now=9).allowed
    again = limiter.hit_now("a", now=10)
    assert again.allowed
    assert again.reset_s == 10

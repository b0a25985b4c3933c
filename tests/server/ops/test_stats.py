"""The heartbeat's arithmetic: percentiles inside histogram buckets, rates between readings."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from delineate.ops import stats


def test_quantile_interpolates_inside_the_bucket_it_falls_in() -> None:
    """Half of 10 observations lie at or below 0.01 s: p50 is that bound; p95 falls halfway
    into the next bucket."""
    buckets = {0.005: 2, 0.01: 5, 0.05: 10, math.inf: 10}
    assert stats.quantile(0.5, buckets) == pytest.approx(0.01)
    assert stats.quantile(0.95, buckets) == pytest.approx(0.01 + 0.04 * (4.5 / 5))


def test_quantile_of_nothing_is_none_and_beyond_the_last_bound_is_that_bound() -> None:
    """No observations: None (not 0). All in +Inf: the largest finite bound, as Prometheus."""
    assert stats.quantile(0.5, {0.1: 0, math.inf: 0}) is None
    assert stats.quantile(0.99, {0.1: 0, 2.5: 0, math.inf: 4}) == 2.5


def test_interval_counts_only_what_happened_between_two_readings() -> None:
    """Requests, failures and latencies are differences of two cumulative readings, per
    route; the dashboard's own routes are left out; frames become a rate."""
    registry = CollectorRegistry()
    requests = Counter("http_requests_total", "", ["method", "path", "status"], registry=registry)
    duration = Histogram(
        "http_request_duration_seconds", "", ["method", "path", "status"],
        buckets=(0.01, 0.1), registry=registry,
    )  # fmt: skip

    def request(path: str, status: str, seconds: float) -> None:
        requests.labels("GET", path, status).inc()
        duration.labels("GET", path, status).observe(seconds)

    request("/health", "200", 0.5)
    before = stats.Counters.read(registry)
    for _ in range(3):
        request("/health", "200", 0.005)
    request("/health", "503", 0.05)
    request("/v1/ops/overview", "200", 0.005)
    perf = stats.interval(before, stats.Counters.read(registry), 2.0, loop_lag_s=0.004)
    (route,) = perf.routes
    assert route.route == "GET /health"
    assert (route.requests, route.server_errors, route.client_errors) == (4, 1, 0)
    assert route.p50_ms is not None
    assert route.p50_ms <= 10
    assert perf.requests_per_s == 2.0
    assert perf.loop_lag_ms == 4.0
    assert perf.frames_per_s == 0.0

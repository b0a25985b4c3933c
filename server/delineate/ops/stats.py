"""A replica's work between two heartbeats, from its Prometheus registry (pure arithmetic).

``Counters.read`` takes the cumulative counts (per route: requests by status class and the
latency buckets; frames sent; the fan-out delay buckets); ``interval`` turns two readings
into rates and percentiles, interpolated inside histogram buckets as Prometheus's
``histogram_quantile`` does.
"""

from __future__ import annotations

import math

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from delineate.ops.records import Perf, RouteStats

HIDDEN_ROUTES = ("/v1/ops/", "/telemetry/")
"""The dashboard's own calls: charted, they would mostly chart the dashboard."""


class Route(msgspec.Struct):
    buckets: dict[float, int] = msgspec.field(default_factory=dict)
    """Cumulative count at each upper bound (math.inf included)."""
    by_class: dict[str, int] = msgspec.field(default_factory=dict)
    """Requests by status class: 2xx, 3xx, 4xx, 5xx."""


class Counters(msgspec.Struct):
    routes: dict[str, Route] = msgspec.field(default_factory=dict)
    frames: int = 0
    fanout: dict[float, int] = msgspec.field(default_factory=dict)
    sockets: dict[str, int] = msgspec.field(default_factory=dict)

    @classmethod
    def read(cls, registry: CollectorRegistry) -> Counters:
        counters = cls()
        for family in registry.collect():
            for sample in family.samples:
                counters._add(sample)
        return counters

    def _add(self, sample: Sample) -> None:
        name, labels = sample.name, sample.labels
        if name == "http_request_duration_seconds_bucket":
            route = f"{labels['method']} {labels['path']}"
            if not labels["path"].startswith(HIDDEN_ROUTES):
                bound = float(labels["le"])
                buckets = self.routes.setdefault(route, Route()).buckets
                buckets[bound] = buckets.get(bound, 0) + int(sample.value)
        elif name == "http_requests_total":
            if not labels["path"].startswith(HIDDEN_ROUTES):
                route = f"{labels['method']} {labels['path']}"
                status_class = f"{labels['status'][:1]}xx"
                by_class = self.routes.setdefault(route, Route()).by_class
                by_class[status_class] = by_class.get(status_class, 0) + int(sample.value)
        elif name == "delineate_frames_sent_total":
            self.frames += int(sample.value)
        elif name == "delineate_fanout_delay_seconds_bucket":
            self.fanout[float(labels["le"])] = int(sample.value)
        elif name == "delineate_open_connections":
            self.sockets[labels["transport"]] = int(sample.value)


def quantile(q: float, buckets: dict[float, int]) -> float | None:
    """The q-quantile of observations counted in cumulative ``buckets`` (None: none)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: report that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _delta(now: dict[float, int], before: dict[float, int]) -> dict[float, int]:
    return {bound: count - before.get(bound, 0) for bound, count in now.items()}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def route_stats(name: str, now: Route, before: Route | None) -> RouteStats:
    before = before or Route()
    by_class = {c: n - before.by_class.get(c, 0) for c, n in now.by_class.items()}
    buckets = _delta(now.buckets, before.buckets)
    return RouteStats(
        route=name,
        requests=sum(by_class.values()),
        client_errors=by_class.get("4xx", 0),
        server_errors=by_class.get("5xx", 0),
        p50_ms=_ms(quantile(0.5, buckets)),
        p95_ms=_ms(quantile(0.95, buckets)),
        p99_ms=_ms(quantile(0.99, buckets)),
    )


def interval(before: Counters, now: Counters, seconds: float, loop_lag_s: float) -> Perf:
    """What happened between two readings ``seconds`` apart."""
    seconds = max(seconds, 1e-3)
    routes = [
        stats
        for name, route in sorted(now.routes.items())
        if (stats := route_stats(name, route, before.routes.get(name))).requests
    ]
    fanout = _delta(now.fanout, before.fanout)
    return Perf(
        interval_s=round(seconds, 3),
        requests_per_s=round(sum(r.requests for r in routes) / seconds, 3),
        routes=routes,
        frames_per_s=round((now.frames - before.frames) / seconds, 3),
        fanout_p50_ms=_ms(quantile(0.5, fanout)),
        fanout_p95_ms=_ms(quantile(0.95, fanout)),
        loop_lag_ms=round(loop_lag_s * 1000, 3),
    )

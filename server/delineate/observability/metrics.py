"""Prometheus metrics of one replica, served as text at ``GET /metrics``.

Label values are bounded: route templates (never raw paths), frame types, job statuses.
One registry per app, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import bisect
import gc
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # The standard process_* and python_gc_* families, as the default registry has them.
        r.register(PROCESS_COLLECTOR)
        r.register(GC_COLLECTOR)
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests", ["method", "path", "status"], registry=r
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds", "HTTP request duration",
            ["method", "path", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.connections = Gauge(
            "delineate_open_connections", "Open real-time connections", ["transport"], registry=r
        )
        self.delivery = DeliveryStats(r)
        self.jobs_finished = Counter(
            "delineate_jobs_finished_total",
            "Jobs that ended, by final status",
            ["status"],
            registry=r,
        )
        self.job_duration = Histogram(
            "delineate_job_duration_seconds", "Running time of finished jobs",
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        # Read from the shared job store: every replica reports the same global value
        # (aggregate with max(), not sum()); see docs/operations.md.
        self.jobs_queued = Gauge(
            "delineate_jobs_queued",
            "Jobs waiting for a worker, across all replicas (the same value on every replica)",
            registry=r,
        )
        self.jobs_running = Gauge(
            "delineate_jobs_running", "Jobs running on this replica", registry=r
        )
        self.broker_reconnects = CountOf(
            "delineate_broker_reconnects", "Times the broker's listener reconnected", r
        )
        self.closes_queued = Gauge(
            "delineate_closes_queued",
            "Sockets and streams whose terminal frame went out, waiting for their paced close",
            registry=r,
        )
        self.gc_pauses = GcPauses(r)
        self.loop_lag = BucketCounts(
            "delineate_event_loop_lag_seconds", "Lateness of each wake-up of a 10 ms ticker",
            LAG_BUCKETS, r,
        )  # fmt: skip
        self.loop_stall = BucketCounts(
            "delineate_event_loop_stall_seconds",
            "Lateness of each wake-up of the 10 ms ticker less the time the event loop's thread "
            "waited meanwhile for a CPU (Linux only): the replica's own stalls",
            LAG_BUCKETS, r,
        )  # fmt: skip
        self.slow_consumer = Counter(
            "delineate_slow_consumer_total",
            "Slow-consumer events: progress frames coalesced, connections closed",
            ["action"], registry=r,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CountOf:
    """A counter whose value an object already counts (the broker's reconnects): read at
    scrape time from ``source``, never reset."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.source: Callable[[], int] = lambda: 0
        registry.register(self)

    def set_function(self, source: Callable[[], int]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.source())


class BucketCounts:
    """A histogram kept in plain integers (no lock per observation), cumulative at scrape
    time. Scrapes only read it, so any number of scrapers see the same counts."""

    def __init__(
        self, name: str, documentation: str, bounds: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.bounds = name, documentation, bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative(self.bounds, self.counts), sum_value=self.sum)
        yield family


class CpuWait:
    """Seconds one thread has spent runnable but waiting for a CPU (the second field of its
    schedstat), each reading one ``pread`` of a descriptor kept open."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def of_this_thread(cls) -> CpuWait | None:
        """None where the kernel does not say (not Linux, or no schedstats)."""
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        clock = cls(fd)
        try:
            clock.seconds()
        except (OSError, IndexError, ValueError):
            clock.close()
            return None
        return clock

    def seconds(self) -> float:
        return int(os.pread(self._fd, 96, 0).split()[1]) / 1e9

    def close(self) -> None:
        os.close(self._fd)


class GcPauses:
    """``delineate_gc_pause_seconds`` by generation: how long each pass of Python's cyclic
    collector held the event loop (``gc.callbacks``, while ``LoopLagMonitor`` runs). A
    young pass walks what survived since the last one, so the first after a few thousand
    sockets connected walks them all: 0.5-0.6 s on one replica after 11,000 handshakes
    (performance.md), seen in the loop lag but not otherwise explained."""

    name = "delineate_gc_pause_seconds"
    bounds = LAG_BUCKETS

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counts = [[0] * (len(self.bounds) + 1) for _ in range(3)]
        self.sums = [0.0] * 3
        self._started = 0.0
        registry.register(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause, generation = time.perf_counter() - self._started, info["generation"]
        self.counts[generation][bisect.bisect_left(self.bounds, pause)] += 1
        self.sums[generation] += pause

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self.name, "Pauses of the cyclic garbage collector", labels=["generation"]
        )
        for generation, counts in enumerate(self.counts):
            buckets = cumulative(self.bounds, counts)
            family.add_metric([str(generation)], buckets, sum_value=self.sums[generation])
        yield family


def cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus's cumulative ``le`` buckets (``+Inf`` last)."""
    out, total = [], 0
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        total += count
        out.append((bound, float(total)))
    return out


class DeliveryStats:
    """Counted on every socket write, the hottest path: ``delineate_frames_sent_total`` by type
    and the ``delineate_fanout_delay_seconds`` histogram (a frame's ts to its write).

    Plain integers updated from the one event loop, turned into metric families at scrape
    time: prometheus_client's instruments take a lock per update, a large share of what a
    delivered frame costs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent: dict[str, int] = {}
        self.bounds = LATENCY_BUCKETS
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.delay_sum = 0.0
        registry.register(self)

    def record(self, frame_type: str, delay_s: float | None) -> None:
        sent = self.sent
        sent[frame_type] = sent.get(frame_type, 0) + 1
        if delay_s is not None:
            self.buckets[bisect.bisect_left(self.bounds, delay_s)] += 1
            self.delay_sum += delay_s

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "delineate_frames_sent", "Messages written to sockets", labels=["type"]
        )
        for frame_type, count in sorted(self.sent.items()):
            frames.add_metric([frame_type], count)
        yield frames
        delay = HistogramMetricFamily(
            "delineate_fanout_delay_seconds",
            "From a frame's ts to the moment it is written to a socket",
        )
        delay.add_metric([], cumulative(self.bounds, self.buckets), sum_value=self.delay_sum)
        yield delay


class LoopLagMonitor:
    """A 10 ms ticker: how late it wakes up is how long the event loop was blocked.

    Every lateness goes into the ``delineate_event_loop_lag_seconds`` histogram, which
    scrapes only read; the dashboard's heartbeat takes the worst since its previous beat.

    A loop is late for one of two reasons: its own work (a long callback, a collector pass,
    a blocking call), or a box with more runnable threads than cores, where the thread waits
    for one. The kernel counts the second (``run_delay`` in ``/proc/thread-self/schedstat``),
    so ``delineate_event_loop_stall_seconds`` gets each lateness less that wait: what the
    replica's own code cost."""

    TICK_S = 0.01

    def __init__(self, metrics: Metrics) -> None:
        self._histogram = metrics.loop_lag
        self._stalls = metrics.loop_stall
        self._gc_pauses = metrics.gc_pauses
        self._worst_beat = 0.0

    async def run(self) -> None:
        import asyncio

        tick, clock, observe = self.TICK_S, time.perf_counter, self._histogram.observe
        waited = CpuWait.of_this_thread()  # opened here: the loop's thread is the one measured
        gc.callbacks.append(self._gc_pauses)
        try:
            waited_before = waited.seconds() if waited else 0.0
            while True:
                started = clock()
                await asyncio.sleep(tick)
                lag = max(clock() - started - tick, 0.0)
                observe(lag)
                if lag > self._worst_beat:
                    self._worst_beat = lag
                if waited is not None:
                    waited_now = waited.seconds()
                    self._stalls.observe(max(lag - (waited_now - waited_before), 0.0))
                    waited_before = waited_now
        finally:
            gc.callbacks.remove(self._gc_pauses)
            if waited is not None:
                waited.close()

    def reset_beat(self) -> float:
        """The worst lag since the dashboard's last heartbeat (scrapes never reset anything)."""
        worst, self._worst_beat = self._worst_beat, 0.0
        return worst

"""Pure parts of the telemetry conventions: metric types and names, the readiness verdict,
the OpenTelemetry resource under the standard variables."""

from __future__ import annotations

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from delineate.api.health import readiness
from delineate.observability import tracing
from delineate.observability.metrics import LoopLagMonitor, Metrics


def families(metrics: Metrics) -> dict[str, Metric]:
    text = metrics.render().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = metrics.render().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


def test_broker_reconnects_is_a_counter_named_total() -> None:
    """It counts events: a Counter (``_total``), read from the broker's count."""
    metrics = Metrics()
    metrics.broker_reconnects.set_function(lambda: 3)
    assert families(metrics)["delineate_broker_reconnects"].type == "counter"
    assert samples(metrics, "delineate_broker_reconnects_total") == {(): 3.0}


def test_loop_lag_is_a_histogram_no_scrape_resets() -> None:
    """Two scrapers see the same counts: a scrape reads the histogram, never resets it."""
    metrics = Metrics()
    LoopLagMonitor(metrics)
    for lag in (0.0004, 0.03, 0.7):
        metrics.loop_lag.observe(lag)
    first = samples(metrics, "delineate_event_loop_lag_seconds_bucket")
    second = samples(metrics, "delineate_event_loop_lag_seconds_bucket")
    assert first == second
    assert first[(("le", "0.001"),)] == 1
    assert first[(("le", "0.05"),)] == 2
    assert first[(("le", "+Inf"),)] == 3
    assert "delineate_event_loop_lag_max_seconds" not in families(metrics)


def test_the_dashboards_worst_lag_is_its_own() -> None:
    """The heartbeat's worst-lag reading resets only the heartbeat's window."""
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics)
    monitor._worst_beat = 0.2
    metrics.render()
    assert monitor.reset_beat() == 0.2
    assert monitor.reset_beat() == 0.0


def test_the_registry_has_the_process_and_gc_collectors() -> None:
    """process_* and python_gc_* as the default registry has them."""
    names = set(families(Metrics()))
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names
    assert {"python_gc_objects_collected", "python_gc_collections"} <= names


def test_jobs_queued_says_it_is_global() -> None:
    """Its help text tells the reader every replica reports the same value."""
    help_text = families(Metrics())["delineate_jobs_queued"].documentation
    assert "across all replicas" in help_text


@pytest.mark.parametrize(
    ("checks", "draining", "status"),
    [
        ({"storage": True, "queue": True}, False, "ready"),
        ({"storage": True, "queue": True}, True, "not_ready"),
        ({"storage": False, "queue": True}, False, "not_ready"),
    ],
)
def test_readiness_needs_every_check_and_no_drain(
    checks: dict[str, bool], draining: bool, status: str
) -> None:
    """Ready only when every dependency answers and the replica is not draining."""
    body = readiness(checks, draining=draining)
    assert body.status == status
    assert body.draining is draining
    assert set(body.checks) == set(checks)


def test_the_standard_otel_variables_win_over_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the service's defaults."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "downloads-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    attributes = tracing.resource("r1").attributes
    assert attributes["service.name"] == "downloads-eu"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["service.instance.id"] == "r1"


def test_without_otel_variables_the_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """service.name delineate, the version, the replica id."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    attributes = tracing.resource("r1").attributes
    assert attributes["service.name"] == "delineate"
    assert attributes["service.version"] == tracing.VERSION


async def test_gc_pauses_are_measured_by_generation_while_the_monitor_runs() -> None:
    """Each collector pass while the loop-lag monitor runs is one observation of its
    generation; after the monitor stops, passes are no longer watched."""
    import asyncio
    import gc

    metrics = Metrics()
    monitor = asyncio.create_task(LoopLagMonitor(metrics).run())
    await asyncio.sleep(0.02)
    gc.collect(0)
    gc.collect(2)
    monitor.cancel()
    await asyncio.gather(monitor, return_exceptions=True)
    counts = samples(metrics, "delineate_gc_pause_seconds_count")
    assert counts[(("generation", "0"),)] >= 1
    assert counts[(("generation", "2"),)] >= 1
    gc.collect(2)
    assert samples(metrics, "delineate_gc_pause_seconds_count") == counts
    assert metrics.gc_pauses not in gc.callbacks

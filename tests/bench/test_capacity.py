"""The capacity model's arithmetic (bench/capacity.py), on hand-made per-unit costs."""

from __future__ import annotations

import pytest

from bench.capacity import measured, model

COSTS = {
    "replica_us_per_delivered_frame": 20.0,
    "replica_us_per_delivered_frame_sse": 24.0,
    "replica_us_per_pubsub_message": 30.0,
    "kib_per_idle_socket": 16.0,
    "sockets_per_replica_measured": 10_000.0,
    "redis_us_per_published_frame_one_node": 40.0,
    "redis_replica_us_per_published_frame_one_node": 10.0,
    "redis_us_per_published_frame_cluster": 40.0,
    "redis_replica_us_per_published_frame_cluster": 10.0,
}


def test_with_affinity_each_frame_is_read_once_and_cpu_decides() -> None:
    """1,000 jobs x 2 frames/s, 100,000 sockets: 200,000 deliveries x 20 us + 2,000 messages
    x 30 us = 4.06 CPU-s/s, at half a core each: 9 processes; sockets need 10."""
    out = model(COSTS, sockets=100_000, jobs=1_000, rate=2, utilization=0.5, affinity=True)
    assert out["pubsub_messages_into_replicas_per_s"] == 2_000
    assert out["replica_processes_for_cpu"] == 9
    assert out["replica_processes_for_sockets"] == 10
    assert out["replica_processes"] == 10
    assert out["replica_memory_gib_for_sockets"] == pytest.approx(1.5, abs=0.05)
    # 2,000 frames/s x 40 us = 0.08 of a core: one primary.
    assert out["redis_primaries"] == 1
    assert out["redis_cpu_cores_busy"] == 0.08


def test_watchers_spread_at_random_multiply_the_pubsub_fan_in() -> None:
    """Without affinity, a job with 10 watchers over many replicas is read by about 10 of
    them: fan-in grows towards watchers-per-job messages per frame."""
    spread = model(COSTS, sockets=1_000_000, jobs=100_000, rate=2, utilization=0.5)
    routed = model(COSTS, 1_000_000, 100_000, 2, 0.5, affinity=True)
    assert routed["pubsub_messages_into_replicas_per_s"] == 200_000
    assert 1_500_000 < spread["pubsub_messages_into_replicas_per_s"] <= 2_000_000
    assert spread["replica_processes_for_cpu"] > routed["replica_processes_for_cpu"]
    # 200,000 frames/s x 40 us = 8 cores of Redis: 16 primaries at half a core each.
    assert spread["redis_primaries"] == 16


def report_with(**sockets: object) -> dict[str, object]:
    """The smallest `make bench` report ``measured`` reads, with the given sockets run."""
    cpu = {"server_cpu_us_per_frame": 28.0}
    redis = {"redis_cpu_us_per_frame_marginal": {"primary-1": 3.0, "replica-2": 1.0}}
    return {
        "parameters": {"subscribers": 5000, "jobs": 100, "replicas": 2},
        "fanout": {"delineate": cpu, "delineate-sse": cpu},
        "redis_modes": {"replicated": redis, "cluster": redis},
        "pubsub_reader": {"readers": {"broker reader": {"cpu_us_per_message": 35.0}}},
        **sockets,
    }


def test_sockets_per_replica_come_from_the_scale_run_or_an_older_idle_run() -> None:
    """The scale run counts its idle and its streaming sockets over its own replicas; a report
    from before it (an "idle" run on the fan-out's replicas) still models."""
    scale = {
        "replicas": 4, "still_open": 45_000, "kib_per_idle_socket": 14.0,
        "streaming": {"subscribers": {"websocket": 5000}},
    }  # fmt: skip
    assert measured(report_with(scale=scale))["sockets_per_replica_measured"] == 12_500
    idle = {"still_open": 20_000, "kib_per_idle_socket": 13.9}
    older = measured(report_with(idle=idle))
    assert (older["sockets_per_replica_measured"], older["kib_per_idle_socket"]) == (10_000, 13.9)
    with pytest.raises(SystemExit, match="scale"):
        measured(report_with())

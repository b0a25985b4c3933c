"""A capacity model from a `make bench` report: replicas, Redis shards and memory for a
target of sockets and running jobs (docs/scaling.md).

    python bench/capacity.py bench/results/<run>.json [--sockets 1000000] [--jobs 100000]
        [--rate 2] [--utilization 0.5] [--affinity]

Every per-unit cost comes from the report (which key, in ``inputs``); the arithmetic is
``model``, pure. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def measured(report: dict[str, Any]) -> dict[str, float]:
    """The per-unit costs the model needs, read from a `make bench` report."""
    # Reports before 2026-12-03 measured sockets per replica in an "idle" scenario.
    missing = {"fanout", "redis_modes", "pubsub_reader"} - report.keys()
    if not {"scale", "idle"} & report.keys():
        missing.add("scale")
    if missing:
        raise SystemExit(f"not a full `make bench` report (--scenario all): no {sorted(missing)}")
    params = report["parameters"]
    subscribers_per_job = params["subscribers"] / params["jobs"]
    # Less each node's idle CPU (polling, leases, the Cluster bus): what a frame adds.
    single = report["redis_modes"]["replicated"]["redis_cpu_us_per_frame_marginal"]
    cluster = report["redis_modes"]["cluster"]["redis_cpu_us_per_frame_marginal"]

    def of(role: str, nodes: dict[str, float]) -> float:
        return sum(v for k, v in nodes.items() if k.startswith(role))

    if "scale" in report:
        scale = report["scale"]
        held = scale["still_open"] + scale["streaming"]["subscribers"]["websocket"]
        replicas = scale["replicas"]
    else:
        scale = report["idle"]
        held, replicas = scale["still_open"], params["replicas"]
    return {
        # Replica CPU per frame delivered on a socket (steady state, WebSocket), with the
        # frame's pub/sub message shared by subscribers_per_job / replicas sockets.
        "replica_us_per_delivered_frame": report["fanout"]["delineate"]["server_cpu_us_per_frame"],
        "replica_us_per_delivered_frame_sse": report["fanout"]["delineate-sse"][
            "server_cpu_us_per_frame"
        ],
        # Replica CPU per pub/sub message read (bench/pubsub_reader.py, the broker's reader).
        "replica_us_per_pubsub_message": report["pubsub_reader"]["readers"]["broker reader"][
            "cpu_us_per_message"
        ],
        "kib_per_idle_socket": scale["kib_per_idle_socket"],
        "sockets_per_replica_measured": held / replicas,
        # Redis CPU per frame a job publishes (the report's is per delivered frame).
        "redis_us_per_published_frame_one_node": of("primary", single) * subscribers_per_job,
        "redis_replica_us_per_published_frame_one_node": of("replica", single)
        * subscribers_per_job,
        "redis_us_per_published_frame_cluster": of("primary", cluster) * subscribers_per_job,
        "redis_replica_us_per_published_frame_cluster": of("replica", cluster)
        * subscribers_per_job,
    }


def model(
    costs: dict[str, float],
    sockets: int,
    jobs: int,
    rate: float,
    utilization: float,
    affinity: bool = False,
) -> dict[str, Any]:
    """Processes and shards for ``sockets`` sockets following ``jobs`` running jobs that
    each publish ``rate`` frames/s, every process kept under ``utilization`` of a core.
    Without ``affinity`` a job's watchers land on replicas at random, so each replica
    holding one reads the job's every frame from Redis; with it (the edge routes by job)
    one replica reads it."""
    published = jobs * rate
    delivered = sockets * rate
    watchers_per_job = sockets / jobs
    budget = 1e6 * utilization  # CPU-us per second one process may spend

    def replicas_for(messages_per_job: float) -> tuple[int, float]:
        messages = published * messages_per_job
        cpu = (
            delivered * costs["replica_us_per_delivered_frame"]
            + messages * costs["replica_us_per_pubsub_message"]
        )
        return max(math.ceil(cpu / budget), 1), messages

    by_cpu, messages = replicas_for(1.0)
    if not affinity:
        # Replicas per job when its watchers are spread at random over n replicas.
        for _ in range(20):
            spread = by_cpu * (1 - (1 - 1 / by_cpu) ** watchers_per_job) if by_cpu > 1 else 1
            again, messages = replicas_for(spread)
            if again == by_cpu:
                break
            by_cpu = again
    by_sockets = math.ceil(sockets / costs["sockets_per_replica_measured"])
    replicas = max(by_cpu, by_sockets)
    redis_cpu = published * costs["redis_us_per_published_frame_cluster"]
    shards = max(math.ceil(redis_cpu / budget), 1)
    return {
        "target": {"sockets": sockets, "running_jobs": jobs, "frames_per_job_per_s": rate},
        "published_frames_per_s": published,
        "delivered_frames_per_s": delivered,
        "pubsub_messages_into_replicas_per_s": round(messages),
        "replica_processes": replicas,
        "replica_processes_for_cpu": by_cpu,
        "replica_processes_for_sockets": by_sockets,
        "sockets_per_replica": round(sockets / replicas),
        "pubsub_messages_per_replica_per_s": round(messages / replicas),
        "replica_memory_gib_for_sockets": round(sockets * costs["kib_per_idle_socket"] / 2**20, 1),
        "redis_primaries": shards,
        "redis_replicas": shards,
        "redis_cpu_cores_busy": round(redis_cpu / 1e6, 2),
        "redis_frames_per_s_per_primary": round(published / shards),
        "one_node_redis_cpu_cores_busy": round(
            published * costs["redis_us_per_published_frame_one_node"] / 1e6, 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path, help="a `make bench` JSON report")
    parser.add_argument("--sockets", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2.0, help="frames per job per second")
    parser.add_argument("--utilization", type=float, default=0.5, help="of a core, per process")
    parser.add_argument("--affinity", action="store_true", help="a job's watchers on one replica")
    args = parser.parse_args()
    costs = measured(json.loads(args.report.read_text()))
    result = model(costs, args.sockets, args.jobs, args.rate, args.utilization, args.affinity)
    print(json.dumps({"inputs": costs, "report": str(args.report), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

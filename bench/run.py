"""`make bench`: Delineate's fan-out measured on this machine, printed as JSON.

Scenario "fanout": R replicas + redis-server on loopback; J jobs each emitting ~2 progress
frames/s for S seconds (PROGRESS_INTERVAL_MS=500); N WebSocket subscribers (and optionally SSE
ones) spread over the replicas, each following one job from seq 0. Reports delivery, latency
percentiles (frame ts -> receipt), lost/duplicate frames, server CPU per delivered frame, peak RSS.

Scenario "idle": N idle sockets on /v1/ws held by the replicas; reports KiB per socket and each
replica's event-loop lag while they are held (worst lateness of a 10 ms ticker, /metrics).

Everything runs on 127.0.0.1, bounded in time, and is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from server.stack import RedisServer, Replica  # noqa: E402


def start_cluster(replicas: int, tmp: Path, seconds: float) -> tuple[RedisServer, list[Replica]]:
    tmp.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(tmp)
    redis.start()
    env = {
        "REDIS_URL": redis.url,
        "DATA_DIR": str(tmp / "data"),
        "DOWNLOAD_DELAY_MIN_MS": str(int(seconds * 1000)),
        "DOWNLOAD_DELAY_MAX_MS": str(int(seconds * 1000)),
        "PROGRESS_INTERVAL_MS": "500",
        "JOB_CONCURRENCY": "200",
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "LOG_FORMAT": "text",
        "URL_SIGNING_SECRET": "bench",
    }
    nodes = [Replica(f"bench-{i}", env, tmp) for i in range(replicas)]
    for node in nodes:
        node.start()
    return redis, nodes


def fanout(args: argparse.Namespace, nodes: list[Replica]) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "loadtest.py"), "--subscribers", str(args.subscribers),
            "--sse", str(args.sse), "--jobs", str(args.jobs), "--files-per-job", "1",
            "--max-seconds", str(args.seconds * 3 + 60)]  # fmt: skip
    for node in nodes:
        argv += ["--url", node.url, "--pid", str(node.pid)]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.seconds * 3 + 120, check=False
    )
    if not out.stdout.strip():
        raise SystemExit(f"load test failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def hold_idle(nodes: list[Replica], count: int, hold_s: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    before = {n.name: rss_kib(n.pid or 0) for n in nodes}
    sockets = []
    started = time.monotonic()
    for i in range(count):
        node = nodes[i % len(nodes)]
        sockets.append(await connect(f"{node.ws_url}/v1/ws", compression=None, open_timeout=30))
    opened_s = time.monotonic() - started
    for node in nodes:
        loop_lag(node.url)  # a scrape resets the worst-lag window: measure the holding only
    await asyncio.sleep(hold_s)
    after = {n.name: rss_kib(n.pid or 0) for n in nodes}
    lag = {n.name: loop_lag(n.url) for n in nodes}
    alive = sum(1 for ws in sockets if ws.state.name == "OPEN")
    for ws in sockets:
        await ws.close()
    grown = sum(after.values()) - sum(before.values())
    return {
        "idle_sockets": count,
        "still_open": alive,
        "seconds_to_open": round(opened_s, 2),
        "replica_rss_kib_before": before,
        "replica_rss_kib_after": after,
        "kib_per_idle_socket": round(grown / count, 2) if count else None,
        "event_loop_lag_max_ms": lag,
    }


def loop_lag(url: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("delineate_event_loop_lag_max_seconds "):
            return round(float(line.split()[1]) * 1000, 2)
    return -1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["fanout", "idle", "all"], default="all")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--sse", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--idle", type=int, default=5000, help="idle sockets for the idle scenario")
    args = parser.parse_args(argv)
    import resource

    # Children inherit this: thousands of sockets need more than the usual 1024 descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "parameters": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="delineate-bench-") as tmp:
        # Each scenario gets fresh processes, so one's memory high-water mark is not the other's.
        for scenario in ("idle", "fanout"):
            if args.scenario not in (scenario, "all"):
                continue
            redis, nodes = start_cluster(args.replicas, Path(tmp) / scenario, args.seconds)
            try:
                if scenario == "idle":
                    report["idle"] = asyncio.run(hold_idle(nodes, args.idle, 3.0))
                else:
                    report["fanout"] = fanout(args, nodes)
            finally:
                for node in nodes:
                    node.stop()
                redis.stop()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

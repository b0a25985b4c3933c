"""`make bench`: Delineate's fan-out beside python-socketio and encode/broadcaster, on this machine.

Scenario "fanout", run once per server on fresh processes (redis-server + R replicas on
loopback) with identical parameters and the same load client (``bench/loadtest.py``):
N WebSocket subscribers spread over the replicas follow C channels, each carrying ``--rate``
frames/s for ``--seconds`` and then a terminal frame. For Delineate a channel is a real job
(seq allocated in Redis, record saved, history kept, bundle written); for the reference
servers (``bench/reference``) it is a publisher loop inside the replicas. Reported per server:
delivered/s, latency p50/p95/p99/max (frame ts -> receipt, steady state), lost, duplicated,
server CPU per delivered frame, peak RSS, and KiB per idle socket (a separate run holding
``--idle-per-server`` idle sockets). Two more Delineate runs with the same workload: every
subscriber on SSE instead of WebSocket (row "delineate-sse"), and the WebSocket run again
while `POST /v1/download/initiate` arrives at ``--initiate-rate`` requests/s (its latency).

Scenario "scale": ``--scale-sockets`` (50,000) sockets on ``--scale-replicas`` (4) Delineate
replicas, each under the per-process descriptor limit: all but ``--subscribers`` idle, the
rest following the fan-out's jobs. Reports whether every socket stayed open, KiB per idle
socket, the frames' latency, and each replica's worst event-loop lag (a 10 ms ticker).

Scenario "cluster": Delineate's fan-out on one Redis primary with its replica and on a Redis
Cluster of 3 primaries + 3 replicas (``redis_modes``), with each Redis node's CPU per delivered
frame in the steady window (raw, and less what the node spends idle; from the node's own
``INFO cpu``) and each command's time per frame (``INFO commandstats``), beside the replicas'
own CPU.

Scenario "ceiling": each server (Node socket.io with its Redis adapter too) on one replica,
stepping the subscribers (``--ceiling-steps`` x ``--rate`` frames/s, ``--ceiling-seconds`` each,
fresh processes per step) until the p99 while streaming passes 50 ms or a frame is lost: the
last step that held is the ceiling, in frames/s and per core the replica used. Each step also
says how fast the replica took its subscribers' handshakes (all of them, from the jobs' start).

Prints a table (stderr) and the JSON report (stdout). Everything runs on 127.0.0.1, bounded in
time, and is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from delineate.devstack.stack import (  # noqa: E402
    Managed,
    RedisCluster,
    RedisServer,
    Replica,
    free_port,
    http_ok,
    wait_for,
)

SERVERS = ("delineate", "socketio", "broadcaster", "socketio-node")
SCENARIOS = ("fanout", "clients", "sse", "initiate", "scale", "cluster", "ceiling")
PROTOCOL = {"socketio-node": "socketio"}
"""The load test's protocol for a server kind, where the two differ."""
CLIENT_KINDS = {
    # (client, closing) runs beside each server's main row (the minimal client; for
    # Delineate it lets the server close, the references' clients close themselves).
    "delineate": [("raw", "client"), ("websockets", "server"), ("websockets", "client"),
                  ("sdk", "server"), ("sdk", "client")],
    "socketio": [("websockets", "client")],
    "broadcaster": [("websockets", "client")],
    "socketio-node": [("websockets", "client")],
}  # fmt: skip
REFERENCE_APPS = {
    "socketio": "bench.reference.socketio_server:app",
    "broadcaster": "bench.reference.broadcaster_server:app",
}


class ReferenceServer(Managed):
    """A reference server under uvicorn with Delineate's own uvicorn options."""

    def __init__(self, name: str, app: str, redis_url: str, log_dir: Path) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
                "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
                "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
                "--no-access-log", "--log-level", "warning"]  # fmt: skip
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
        super().__init__(name, argv, env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: http_ok(f"{self.url}/health"), 20, f"{self.name} to answer")


class NodeReferenceServer(ReferenceServer):
    """Node socket.io with its Redis adapter (``bench/reference/socketio_node``), its packages
    from ``.cache/npm``, where ``make test`` and ``make bench`` install them."""

    MODULES = ROOT / ".cache" / "npm" / "node_modules"

    def __init__(self, name: str, redis_url: str, log_dir: Path) -> None:
        from delineate.devstack.stack import require

        if not (self.MODULES / "socket.io").is_dir():
            raise SystemExit(f"socket.io is not installed in {self.MODULES}: run `make install`")
        self.port = free_port()
        argv = [require("node"), str(BENCH / "reference" / "socketio_node" / "server.js")]
        env = {**os.environ, "PORT": str(self.port), "REDIS_URL": redis_url,
               "NODE_PATH": str(self.MODULES)}  # fmt: skip
        Managed.__init__(self, name, argv, env, log_dir)  # not uvicorn: only start() is shared
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"


class ReplicatedRedis:
    """One Redis primary and its replica: the one-node side of the Cluster comparison pays
    for replication as every Cluster primary does."""

    def __init__(self, tmp: Path) -> None:
        self.primary = RedisServer(tmp, name="redis-primary", fsync="everysec")
        self.replica = RedisServer(
            tmp, name="redis-replica", fsync="everysec",
            extra=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )  # fmt: skip
        self.url = self.primary.url

    def start(self) -> None:
        import redis

        self.primary.start()
        self.replica.start()
        with redis.Redis(port=self.replica.port, socket_timeout=1) as client:
            wait_for(
                lambda: client.info("replication").get("master_link_status") == "up",
                30,
                "the replica to sync",
            )

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


Redis = RedisServer | ReplicatedRedis | RedisCluster


def start_servers(
    kind: str, args: argparse.Namespace, tmp: Path, redis_mode: str = "single",
    replicas: int | None = None, env: dict[str, str] | None = None,
) -> tuple[Redis, list[Managed]]:  # fmt: skip
    """Redis (everysec, as compose/ runs it: see RedisServer) and ``replicas`` (default
    ``--replicas``) replicas, Delineate's with ``env`` added. ``redis_mode`` "single" is one
    node, "replicated" a primary and its replica, "cluster" 3 + 3."""
    replicas = replicas or args.replicas
    tmp.mkdir(parents=True, exist_ok=True)
    redis: Redis = {
        "single": lambda: RedisServer(tmp, fsync="everysec"),
        "replicated": lambda: ReplicatedRedis(tmp),
        "cluster": lambda: RedisCluster(tmp, fsync="everysec"),
    }[redis_mode]()
    redis.start()
    nodes: list[Managed]
    if kind == "delineate":
        # Jobs outlast the ramp of thousands of handshakes, so the steady window is --seconds.
        job_s = args.seconds + ramp_allowance(args.subscribers)
        settings = {
            "REDIS_URL": redis.url,
            "DATA_DIR": str(tmp / "data"),
            "DOWNLOAD_DELAY_MIN_MS": str(int(job_s * 1000)),
            "DOWNLOAD_DELAY_MAX_MS": str(int(job_s * 1000)),
            "PROGRESS_INTERVAL_MS": str(int(1000 / args.rate)),
            "JOB_CONCURRENCY": str(max(8, args.jobs)),
            "MAX_ACTIVE_JOBS_PER_OWNER": "0",
            "MAX_SOCKETS_PER_IP": "1000000",
            "RATE_LIMIT_MAX_REQUESTS": "100000000",
            "LOG_FORMAT": "text",
            "URL_SIGNING_SECRET": "bench",
            **(env or {}),
        }
        nodes = [Replica(f"bench-{i}", settings, tmp) for i in range(replicas)]
    elif kind == "socketio-node":
        nodes = [NodeReferenceServer(f"{kind}-{i}", redis.url, tmp) for i in range(replicas)]
    else:
        app = REFERENCE_APPS[kind]
        nodes = [ReferenceServer(f"{kind}-{i}", app, redis.url, tmp) for i in range(replicas)]
    for node in nodes:
        node.start()  # type: ignore[no-untyped-call]
    return redis, nodes


def ramp_allowance(subscribers: int) -> float:
    """Seconds for the subscribers to connect, plus the settle time before measuring: one
    replica took 7 to 16 s for 6,000 handshakes and 22 to 31 s for 11,000 (2026-12-03)."""
    return 3 + subscribers / 250


def redis_roles(redis: Redis) -> list[tuple[str, int]]:
    """(role-port, port) of every Redis node: ("primary-7001", 7001), ("replica-7004", 7004)."""
    if isinstance(redis, RedisServer):
        return [(f"primary-{redis.port}", redis.port)]
    if isinstance(redis, ReplicatedRedis):
        return [
            (f"primary-{redis.primary.port}", redis.primary.port),
            (f"replica-{redis.replica.port}", redis.replica.port),
        ]
    primaries = set(redis.primary_ports())
    return [
        (f"{'primary' if n.port in primaries else 'replica'}-{n.port}", n.port) for n in redis.nodes
    ]


def idle_cpu_rate(roles: Sequence[tuple[str, int]], seconds: float) -> dict[str, float]:
    """Each Redis node's CPU-us per second with the replicas up and no job: the polling,
    leases and (Cluster) the bus and replication pings, paid whatever the frame rate."""
    from bench.loadtest import redis_usage

    before = {name: redis_usage(port)[0] for name, port in roles}
    time.sleep(seconds)
    return {name: (redis_usage(port)[0] - before[name]) * 1e6 / seconds for name, port in roles}


def with_marginal(result: dict[str, Any], idle_us_per_s: dict[str, float]) -> dict[str, Any]:
    """``result`` with each Redis node's CPU per frame less what it spends idle."""
    steady = result.get("redis_steady") or {}
    frames, seconds = steady.get("frames"), steady.get("seconds", 0)
    if frames:
        result["redis_idle_cpu_us_per_s"] = {k: round(v, 1) for k, v in idle_us_per_s.items()}
        result["redis_cpu_us_per_frame_marginal"] = {
            name: round(max(0.0, per_frame - idle_us_per_s[name] * seconds / frames), 2)
            for name, per_frame in result["redis_cpu_us_per_frame"].items()
        }
    return result


def fanout(
    kind: str, args: argparse.Namespace, nodes: list[Any], *, sse: bool = False,
    initiate_rate: float = 0, samples: Path | None = None,
    redis_nodes: Sequence[tuple[str, int]] = (), client: str = "raw", closing: str | None = None,
    follow: str = "history",
) -> dict[str, Any]:  # fmt: skip
    """One load-test run: every subscriber on WebSocket, or (``sse``) every one on SSE;
    with ``initiate_rate``, initiate requests arrive at that rate during the steady window;
    with ``samples``, every latency sample is written there. ``client`` and ``closing`` are
    the load test's client kind and what it does after the terminal frame; ``follow`` where
    Delineate's subscribers start (seq 0, or "live" from the job's position)."""
    ws, sse_count = (0, args.subscribers) if sse else (args.subscribers, 0)
    argv = [sys.executable, str(BENCH / "loadtest.py"), "--protocol", PROTOCOL.get(kind, kind),
            "--subscribers", str(ws), "--sse", str(sse_count),
            "--jobs", str(args.jobs), "--files-per-job", "1", "--rate", str(args.rate),
            "--seconds", str(args.seconds),
            "--max-seconds", str(args.seconds * 3 + 90),
            "--client", client, "--processes", str(args.client_processes),
            "--follow", follow]  # fmt: skip
    if closing is not None:
        argv += ["--closing", closing]
    if initiate_rate:
        # Inside the steady window: Delineate's jobs outlast the ramp by about --seconds, less
        # the load test's 2 s settle.
        window = max(1.0, args.seconds - 3)
        argv += ["--initiate-rate", str(initiate_rate), "--initiate-seconds", str(window)]
    if samples is not None:
        argv += ["--samples", str(samples)]
    for node in nodes:
        argv += ["--url", node.url, "--pid", str(node.pid)]
    for name, port in redis_nodes:
        argv += ["--redis-port", f"{name}={port}"]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=args.seconds * 3 + 150, check=False
    )
    if not out.stdout.strip():
        raise SystemExit(f"load test of {kind} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


CEILING_P99_MS = 50.0
CEILING_STEPS = (500, 1000, 2000, 3000, 4000, 6000, 8000, 11000, 15000)
"""Subscribers per step (x --rate frames/s each): each under the descriptor limit."""


def ceiling(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One replica (and Redis) under more subscribers each step, on fresh processes, until the
    p99 while streaming passes CEILING_P99_MS or a frame is lost: the last step that held is
    the ceiling, in frames per second for the replica and per core it used."""
    steps: list[dict[str, Any]] = []
    for subscribers in args.ceiling_steps:
        step_args = argparse.Namespace(
            **{**vars(args), "subscribers": subscribers, "seconds": args.ceiling_seconds}
        )
        sys.stderr.write(f"ceiling: {kind}, {subscribers} subscribers\n")
        redis, nodes = start_servers(kind, step_args, tmp / f"{kind}-{subscribers}", replicas=1)
        try:
            # Live: the ramp is handshakes only, for every server alike (the reference
            # servers' channels start once everyone is in; a replay from seq 0 of every
            # subscriber's job made Delineate's ramp, not its stream, what failed first).
            result = fanout(kind, step_args, nodes, follow="live")
        finally:
            for node in nodes:
                node.stop()
            redis.stop()
        offered = subscribers * args.rate
        us_per_frame = result.get("server_cpu_us_per_frame")
        step = {
            "subscribers": subscribers,
            "frames_per_second": offered,
            "p99_streaming_ms": result["latency_ms_while_streaming"]["p99"],
            "p99_whole_run_ms": result["latency_ms"]["p99"],
            "lost_frames": result["lost_frames"],
            "unfinished_subscribers": result["unfinished_subscribers"],
            "handshakes_per_second": result.get("ramp", {}).get("handshakes_per_second"),
            "server_cpu_us_per_frame": us_per_frame,
            # The replica's share of a core in the steady stream, and the load clients' (so a
            # reader sees which side ran out first).
            "server_cores": round(offered * us_per_frame / 1e6, 3) if us_per_frame else None,
            "client_cores": round(
                offered * (result["client"].get("cpu_us_per_frame") or 0) / 1e6, 3
            ),
        }
        steps.append(step)
        if not holds(step):
            break
    return ceiling_of(steps)


def holds(step: dict[str, Any]) -> bool:
    """A step held: p99 while streaming within the bound, every frame delivered."""
    p99 = step["p99_streaming_ms"]
    return (
        p99 is not None
        and p99 <= CEILING_P99_MS
        and not step["lost_frames"]
        and not step["unfinished_subscribers"]
    )


def ceiling_of(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The last step that held (steps stop at the first that did not), per replica and per
    core the replica used there."""
    held = [step for step in steps if holds(step)]
    last = held[-1] if held else None
    return {
        "p99_bound_ms": CEILING_P99_MS,
        "steps": steps,
        "ceiling_frames_per_second": last["frames_per_second"] if last else 0,
        "ceiling_frames_per_second_per_core": (
            round(last["frames_per_second"] / last["server_cores"])
            if last and last["server_cores"]
            else None
        ),
        "limited_by": "the steps' end" if steps and holds(steps[-1]) else "p99 or loss",
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# As a browser: no pings of its own (the servers ping), no compression.
IDLE_CLIENT: dict[str, Any] = {"compression": None, "open_timeout": 60, "ping_interval": None}


async def open_idle(kind: str, node: Any, index: int) -> Any:
    from websockets.asyncio.client import connect

    if kind == "delineate":
        return await connect(f"{node.ws_url}/v1/ws", **IDLE_CLIENT)
    if kind == "broadcaster":
        return await connect(f"{node.ws_url}/ws/idle-{index}", **IDLE_CLIENT)
    ws = await connect(f"{node.ws_url}/socket.io/?EIO=4&transport=websocket", **IDLE_CLIENT)
    await ws.recv()  # the open packet
    await ws.send("40")
    await ws.recv()  # connected to the namespace
    return ws


PER_HOLDER = 8000
"""Sockets one holder process opens: a process may have only so many descriptors."""


async def open_many(kind: str, urls: list[str], first: int, count: int) -> list[Any]:
    nodes = [argparse.Namespace(ws_url="ws" + url.removeprefix("http")) for url in urls]
    sockets = []
    batch = 200  # connect in batches: a backlog of 20,000 SYNs at once only measures the kernel
    for start in range(first, first + count, batch):
        stop = min(first + count, start + batch)
        sockets += await asyncio.gather(
            *(open_idle(kind, nodes[i % len(nodes)], i) for i in range(start, stop))
        )
    return sockets


async def hold(kind: str, urls: list[str], first: int, count: int) -> None:
    """A holder process: open the sockets, say so, keep them until stdin closes."""
    sockets = await open_many(kind, urls, first, count)
    print(sum(1 for ws in sockets if ws.state.name == "OPEN"), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    alive = sum(1 for ws in sockets if ws.state.name == "OPEN")
    print(alive, flush=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


class Holders:
    """Holder processes (PER_HOLDER sockets each) keeping ``count`` idle sockets open on the
    replicas until ``close``, which says how many were still open."""

    def __init__(self, kind: str, nodes: list[Any], count: int) -> None:
        self.kind, self.urls, self.count = kind, ",".join(n.url for n in nodes), count
        self.processes: list[asyncio.subprocess.Process] = []

    async def open(self) -> int:
        """Start the holders; the number of sockets they opened."""
        for first in range(0, self.count, PER_HOLDER):
            n = min(PER_HOLDER, self.count - first)
            argv = [sys.executable, __file__, "--hold", self.kind, self.urls, str(first), str(n)]
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
                )
            )
        return sum([int((await p.stdout.readline()) or 0) for p in self.processes])  # type: ignore[union-attr]

    async def close(self) -> int:
        """Stop the holders; the number of sockets still open just before."""
        alive = 0
        for holder in self.processes:
            holder.stdin.close()  # type: ignore[union-attr]
            alive += int((await holder.stdout.readline()) or 0)  # type: ignore[union-attr]
            await holder.wait()
        return alive


async def open_held(kind: str, nodes: list[Any], count: int) -> tuple[Holders, dict[str, Any]]:
    """Open ``count`` idle sockets on the replicas: their holders, and the memory they took."""
    before = {n.name: rss_kib(n.pid or 0) for n in nodes}
    started = time.monotonic()
    holders = Holders(kind, nodes, count)
    opened = await holders.open()
    opened_s = time.monotonic() - started
    await asyncio.sleep(1.0)
    after = {n.name: rss_kib(n.pid or 0) for n in nodes}
    grown = sum(after.values()) - sum(before.values())
    return holders, {
        "idle_sockets": count,
        "opened": opened,
        "seconds_to_open": round(opened_s, 2),
        "replica_rss_kib_before": before,
        "replica_rss_kib_after": after,
        "kib_per_idle_socket": round(grown / count, 2) if count else None,
    }


async def hold_idle(kind: str, nodes: list[Any], count: int) -> dict[str, Any]:
    """Open ``count`` idle sockets on the replicas and measure the memory they take."""
    holders, memory = await open_held(kind, nodes, count)
    return {"server": kind, **memory, "still_open": await holders.close()}


async def scale(args: argparse.Namespace, nodes: list[Any]) -> dict[str, Any]:
    """``--scale-sockets`` sockets on ``--scale-replicas`` replicas: all but ``--subscribers``
    idle (memory measured with only those open), then the usual fan-out to the rest while
    the idle ones stay open. Every replica's worst event-loop lag in the fan-out's steady
    window, and over the whole fan-out (the subscribers' ramp and the jobs' ends too)."""
    holders, memory = await open_held("delineate", nodes, args.scale_sockets - args.subscribers)
    lag_before = {n.name: lag_buckets(n.url) for n in nodes}
    run = asyncio.create_task(asyncio.to_thread(fanout, "delineate", args, nodes))
    try:
        # The steady window, as the load test's: from the subscribers' ramp to a second
        # before the jobs end (they outlast it by --seconds).
        await asyncio.sleep(ramp_allowance(args.subscribers))
        steady_before = {n.name: lag_buckets(n.url) for n in nodes}
        await asyncio.sleep(max(1.0, args.seconds - 2))
        steady = worst_lags(steady_before, {n.name: lag_buckets(n.url) for n in nodes})
        streaming = await run
    finally:
        whole = worst_lags(lag_before, {n.name: lag_buckets(n.url) for n in nodes})
        alive = await holders.close()
    return {
        "sockets": args.scale_sockets,
        "replicas": len(nodes),
        **memory,
        "still_open": alive,
        "replica_rss_kib_peak": streaming.get("server_peak_rss_kib"),
        # Lag: how late the replica's ticker woke up; stall: that, less the time its thread
        # waited for a CPU meanwhile (the replica's own share; Linux's schedstat).
        "event_loop_lag_max_ms": steady[LAG],
        "event_loop_stall_max_ms": steady[STALL],
        "event_loop_lag_max_ms_whole_run": whole[LAG],
        "event_loop_stall_max_ms_whole_run": whole[STALL],
        "streaming": streaming,
    }


LAG, STALL = "delineate_event_loop_lag_seconds", "delineate_event_loop_stall_seconds"


def lag_buckets(url: str) -> Buckets:
    """The cumulative buckets (upper bound: count) of the replica's loop lag and stall
    histograms, by name."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, dict[float, float]] = {LAG: {}, STALL: {}}
    for family in text_string_to_metric_families(text):
        if family.name in found:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    found[family.name][float(sample.labels["le"])] = sample.value
    return found


Buckets = dict[str, dict[float, float]]


def worst_lags(
    before: dict[str, Buckets], after: dict[str, Buckets]
) -> dict[str, dict[str, float]]:
    """Each histogram's worst value per replica between two readings of every replica."""
    return {
        name: {node: worst_lag_ms(before[node][name], after[node][name]) for node in after}
        for name in (LAG, STALL)
    }


def worst_lag_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound that holds every wake-up between two readings (the worst
    lag, to a bucket; the last finite bound when some were beyond it); -1 without any."""
    delta = {bound: count - before.get(bound, 0) for bound, count in after.items()}
    total = delta.get(float("inf"), 0)
    if not total:
        return -1.0
    finite = sorted(b for b in delta if b != float("inf"))
    ceiling = next((b for b in finite if delta[b] >= total), finite[-1])
    return round(ceiling * 1000, 2)


def table(report: dict[str, Any]) -> str:
    columns = ["server", "delivered/s", "p50", "p95", "p99", "max", "lost", "dup",
               "p99 streaming", "CPU us/frame", "peak RSS MiB", "KiB/idle socket"]  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    if "fanout" not in report:
        rows = []
    for kind, result in report.get("fanout", {}).items():
        lat = result["latency_ms"]
        idle = report.get("idle_per_server", {}).get(kind, {})
        rss = sum(result.get("server_peak_rss_kib", {}).values()) / 1024
        rows.append(
            f"| {kind} | {result['frames_per_second']:,.0f} | {lat['p50']} ms | {lat['p95']} ms "
            f"| {lat['p99']} ms | {lat['max']} ms | {result['lost_frames']} "
            f"| {result['duplicate_frames']} "
            f"| {result.get('latency_ms_while_streaming', {}).get('p99')} ms "
            f"| {result.get('server_cpu_us_per_frame')} "
            f"| {rss:.0f} | {idle.get('kib_per_idle_socket', '-')} |"
        )
    if "clients" in report:
        rows += ["", clients_table(report)]
    if "ceiling" in report:
        rows += ["", ceiling_table(report["ceiling"])]
    if "initiate" in report:
        run = report["initiate"]
        load = run.get("initiate_under_load") or {}
        lat = load.get("latency_ms", {})
        rows.append("")
        if "failed" in load:
            rows.append(f"initiate under load: the load process failed:\n{load['failed']}")
        else:
            rows.append(
                f"initiate under load: {load.get('rate_achieved')} requests/s while "
                f"{run['subscribers']['websocket']:,} sockets stream: p50 {lat.get('p50')} ms, "
                f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms, {load.get('errors')} errors "
                f"(frames meanwhile: p99 {run['latency_ms']['p99']} ms, {run['lost_frames']} lost)"
            )
    for mode, result in report.get("redis_modes", {}).items():
        per_node = result.get("redis_cpu_us_per_frame_marginal", {})
        primaries = {k: v for k, v in per_node.items() if k.startswith("primary")}
        replicas = {k: v for k, v in per_node.items() if k.startswith("replica")}
        rows.append("")
        rows.append(
            f"redis {mode}: {result['frames_per_second']:,.0f} frames/s, p99 "
            f"{result['latency_ms']['p99']} ms, lost {result['lost_frames']}; replicas "
            f"{result.get('server_cpu_us_per_frame')} us/frame; Redis us/frame (less its idle "
            f"CPU) per primary {sorted(primaries.values())}, per Redis replica "
            f"{sorted(replicas.values())}"
        )
    if "scale" in report:
        run = report["scale"]
        streaming = run["streaming"]
        rows.append("")
        rows.append(
            f"scale: {run['sockets']:,} sockets on {run['replicas']} replicas, "
            f"{run['idle_sockets']:,} idle ({run['still_open']:,} still open at the end, "
            f"{run['kib_per_idle_socket']} KiB each); {streaming['subscribers']['websocket']:,} "
            f"following {streaming['jobs']} jobs: p99 {streaming['latency_ms']['p99']} ms, "
            f"lost {streaming['lost_frames']}; worst event-loop lag per replica "
            f"{sorted(run['event_loop_lag_max_ms'].values())} ms (of it the replicas' own "
            f"stalls: {sorted(run['event_loop_stall_max_ms'].values())} ms)"
        )
    return "\n".join(rows)


def clients_table(report: dict[str, Any]) -> str:
    """Every client kind's run: the steady stream, the whole run (job ends included) and the
    terminal frames alone, with what the servers and the load client spent per frame."""
    columns = ["server", "client", "after the terminal frame", "p99 streaming", "p99 whole run",
               "p99 terminal frames", "max", "lost", "dup", "unfinished",
               "server CPU us/frame", "client CPU us/frame"]  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    runs = [((kind, "raw", result["client"]["closing"]), result)
            for kind, result in report.get("fanout", {}).items() if "sse" not in kind]  # fmt: skip
    runs += [(tuple(name.split()), result) for name, result in report["clients"].items()]
    for (kind, client, closing), result in sorted(runs):
        terminal = [v["p99"] for k, v in result["latency_ms_by_type"].items() if k in TERMINAL]
        lat, streaming = result["latency_ms"], result["latency_ms_while_streaming"]
        rows.append(
            f"| {kind} | {client} | {'server closes' if closing == 'server' else 'client closes'} "
            f"| {streaming['p99']} ms | {lat['p99']} ms "
            f"| {max(terminal, default='-')} ms | {lat['max']} ms "
            f"| {result['lost_frames']} | {result['duplicate_frames']} "
            f"| {result['unfinished_subscribers']} | {result.get('server_cpu_us_per_frame')} "
            f"| {result['client'].get('cpu_us_per_frame')} |"
        )
    return "\n".join(rows)


def ceiling_table(ceilings: dict[str, Any]) -> str:
    """Each server's steps on one replica, and the ceiling each reached."""
    columns = ["server", "subscribers", "frames/s", "p99 streaming", "p99 whole run", "lost",
               "replica cores", "client cores", "handshakes/s"]  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for kind, run in ceilings.items():
        for step in run["steps"]:
            rows.append(
                f"| {kind} | {step['subscribers']:,} | {step['frames_per_second']:,.0f} "
                f"| {step['p99_streaming_ms']} ms | {step['p99_whole_run_ms']} ms "
                f"| {step['lost_frames']} | {step['server_cores']} | {step['client_cores']} "
                f"| {step.get('handshakes_per_second')} |"
            )
    for kind, run in ceilings.items():
        rows.append(
            f"ceiling {kind}: {run['ceiling_frames_per_second']:,.0f} frames/s on one replica "
            f"(p99 <= {run['p99_bound_ms']:.0f} ms), "
            f"{run['ceiling_frames_per_second_per_core']} frames/s per core; limited by "
            f"{run['limited_by']}"
        )
    return "\n".join(rows)


TERMINAL = ("completed", "failed", "cancelled")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--hold"]:
        _, kind, urls, first, count = argv
        asyncio.run(hold(kind, urls.split(","), int(first), int(count)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario", default="all",
        help=f"comma-separated, of {', '.join(SCENARIOS)}; or all",
    )  # fmt: skip
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument(
        "--initiate-rate", type=float, default=200, help="initiate requests/s (0: skip that run)"
    )
    parser.add_argument("--jobs", type=int, default=100, help="channels (jobs for Delineate)")
    parser.add_argument("--rate", type=float, default=2, help="frames per second per channel")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--client-processes", type=int, default=2, help="load-client processes per fan-out run"
    )
    parser.add_argument(
        "--scale-sockets", type=int, default=50000, help="sockets in all, scale scenario"
    )
    parser.add_argument("--scale-replicas", type=int, default=4, help="replicas, scale scenario")
    parser.add_argument("--idle-per-server", type=int, default=5000, help="idle sockets per server")
    parser.add_argument(
        "--ceiling-seconds", type=float, default=10, help="seconds per step, ceiling scenario"
    )
    parser.add_argument(
        "--ceiling-steps", type=lambda text: [int(n) for n in text.split(",")],
        default=list(CEILING_STEPS), help="subscribers per step, comma-separated, ceiling scenario",
    )  # fmt: skip
    parser.add_argument(
        "--messages", type=int, default=3000, help="pub/sub messages, cluster scenario's reader"
    )
    parser.add_argument(
        "--redis-idle-seconds", type=float, default=5,
        help="seconds each Redis node's idle CPU is measured, cluster scenario",
    )  # fmt: skip
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the servers' logs and data, and every latency sample, under DIR",
    )
    args = parser.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    scenarios = SCENARIOS if args.scenario == "all" else args.scenario.split(",")
    if set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(set(scenarios) - set(SCENARIOS))}")
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {sorted(unknown)}")
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
    workdir: Any = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="delineate-bench-", dir=args.keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="delineate-bench-")
    )
    with workdir as tmp:
        # Every run gets fresh processes, so one's memory high-water mark is not the other's.
        runs: list[tuple[str, str]] = []
        if "fanout" in scenarios:
            runs += [("fanout", kind) for kind in servers]
        if "clients" in scenarios:
            runs += [
                (f"clients-{client}-{closing}", kind)
                for kind in servers
                for client, closing in CLIENT_KINDS[kind]
            ]
        if "sse" in scenarios and "delineate" in servers:
            runs.append(("sse", "delineate"))
        if "initiate" in scenarios and "delineate" in servers and args.initiate_rate:
            runs.append(("initiate", "delineate"))
        if "fanout" in scenarios:
            runs += [("idle_per_server", kind) for kind in servers]
        if "scale" in scenarios and "delineate" in servers:
            runs.append(("scale", "delineate"))
        if "cluster" in scenarios and "delineate" in servers:
            runs += [("redis-replicated", "delineate"), ("redis-cluster", "delineate")]
        if "ceiling" in scenarios:
            for kind in servers:
                report.setdefault("ceiling", {})[kind] = ceiling(kind, args, Path(tmp) / "ceiling")
        for scenario, kind in runs:
            sys.stderr.write(f"{scenario}: {kind}\n")
            run_dir = Path(tmp) / f"{scenario}-{kind}"
            redis_mode = scenario.split("-", 1)[1] if scenario.startswith("redis-") else "single"
            if scenario == "scale":
                # The idle sockets follow no job: keep them past IDLE_SOCKET_TIMEOUT_S.
                redis, nodes = start_servers(
                    kind, args, run_dir, replicas=args.scale_replicas,
                    env={"IDLE_SOCKET_TIMEOUT_S": "3600"},
                )  # fmt: skip
            else:
                redis, nodes = start_servers(kind, args, run_dir, redis_mode)
            # With --keep, every latency sample too ([frame ts ms, latency ms, type]).
            samples = run_dir / "latency-samples.json" if args.keep else None
            try:
                if scenario == "fanout":
                    report.setdefault("fanout", {})[kind] = fanout(
                        kind, args, nodes, samples=samples
                    )
                elif scenario.startswith("clients-"):
                    _, client, closing = scenario.split("-")
                    result = fanout(kind, args, nodes, client=client, closing=closing)
                    report.setdefault("clients", {})[f"{kind} {client} {closing}"] = result
                elif scenario == "sse":
                    report.setdefault("fanout", {})["delineate-sse"] = fanout(
                        kind, args, nodes, sse=True, samples=samples
                    )
                elif scenario == "initiate":
                    report["initiate"] = fanout(
                        kind, args, nodes, initiate_rate=args.initiate_rate, samples=samples
                    )
                elif scenario.startswith("redis-"):
                    # The same fan-out on one Redis node and on a Cluster of 3 primaries (+3
                    # replicas), each node's CPU per frame measured.
                    roles = redis_roles(redis)
                    idle = idle_cpu_rate(roles, args.redis_idle_seconds)
                    result = fanout(kind, args, nodes, samples=samples, redis_nodes=roles)
                    report.setdefault("redis_modes", {})[redis_mode] = with_marginal(result, idle)
                elif scenario == "idle_per_server":
                    result = asyncio.run(hold_idle(kind, nodes, args.idle_per_server))
                    report.setdefault("idle_per_server", {})[kind] = result
                else:
                    report["scale"] = asyncio.run(scale(args, nodes))
            finally:
                for node in nodes:
                    node.stop()
                redis.stop()
    if "cluster" in scenarios and "delineate" in servers:
        # The cost of one pub/sub message read (the capacity model's fan-in term).
        out = subprocess.run(
            [sys.executable, str(BENCH / "pubsub_reader.py"), "--messages", str(args.messages)],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        report["pubsub_reader"] = json.loads(out.stdout)
    sys.stderr.write(table(report) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

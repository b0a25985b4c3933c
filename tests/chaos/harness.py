"""The chaos deployment and its trial loop: 3 replicas, Redis (one redis-server with
appendfsync always, a Cluster or a Sentinel group), SeaweedFS behind a fault proxy, all on
loopback and reused across trials (only what a fault killed is started again). Each trial
runs a seeded workload with seeded faults, heals everything, reads every job's final state
(status document, bucket, stored history) and hands the history to ``checker``.

    CHAOS_SEED=123 CHAOS_TRIALS=500 python -m tests.chaos.harness    # `make chaos`
    CHAOS_SEED=123 CHAOS_FIRST=41 CHAOS_TRIALS=1 python -m tests.chaos.harness  # replay one
    CHAOS_REDIS=cluster (or sentinel) ...   # on a Redis Cluster / Sentinel, with primary kills

Trial ``i`` of seed ``s`` draws everything from ``Random(f"{s}:{i}")``, so one trial replays
alone. The summary (JSON) and the history of every trial with a violation go to
``test-artifacts/chaos/``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import httpx
import redis
from botocore.config import Config

from delineate.devstack import stack
from delineate.redis import keys as redis_keys
from tests.chaos import checker, faults, workload
from tests.chaos.history import TERMINAL, Job, Op, Trial, Watcher

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos"
LEASE_MS = 1500
REPLICA_ENV = {
    "DOWNLOAD_DELAY_ENABLED": "true",
    "DOWNLOAD_DELAY_MIN_MS": "150",
    "DOWNLOAD_DELAY_MAX_MS": "450",
    "PROGRESS_INTERVAL_MS": "20",
    "JOB_LEASE_MS": str(LEASE_MS),
    "JOB_RETRY_BASE_MS": "100",
    "STORAGE_TIMEOUT_S": "1",
    "RATE_LIMIT_MAX_REQUESTS": "1000000",
    "MAX_ACTIVE_JOBS_PER_OWNER": "0",
    "API_KEYS": workload.API_KEYS,
    "URL_SIGNING_SECRET": "chaos-secret",
    "LOG_FORMAT": "text",
}
SETTLE_S = 40.0
HANG_BOUND_S = 20.0
FLOW_BOUND_S = 60.0
SOURCE_BYTES = 20_000
STOP = threading.Event()
"""Set by SIGINT/SIGTERM (``main``): the run ends after the trial under way, cleaning up."""


REDIS_MODES = ("single", "cluster", "sentinel")


class Deployment:
    """The processes every trial shares, stopped by their own pids at the end. ``redis_mode``
    is one redis-server, a Cluster (3 primaries + 3 replicas) or a primary + replica watched
    by 3 sentinels; each has faults of its own (``faults.kinds_for``)."""

    def __init__(self, root: Path, replicas: int = 3, redis_mode: str = "single") -> None:
        self.root, self.redis_mode = root, redis_mode
        self.s3 = stack.SeaweedS3(root)
        self.redis: Any = {
            "single": lambda: stack.RedisServer(root, fsync="always"),
            "cluster": lambda: stack.RedisCluster(root),
            "sentinel": lambda: stack.RedisSentinels(root),
        }[redis_mode]()
        self.proxy = faults.S3Proxy(self.s3.ports["s3.port"])
        self.bucket = "chaos"
        env = {**REPLICA_ENV, "REDIS_URL": self.redis.url, **self.s3.settings_for(self.bucket)}
        env["S3_ENDPOINT"] = self.proxy.endpoint
        self.replicas = [stack.Replica(f"replica-{i}", env, root) for i in range(replicas)]
        self.by_name = {r.name: r for r in self.replicas}
        self.restarts = 0

    def start(self) -> None:
        self.s3.start()
        self.redis.start()
        self.proxy.start()
        argv = [sys.executable, "-m", "delineate", "seed", "--size", str(SOURCE_BYTES)]
        argv += ["--ids", ",".join(map(str, workload.FILE_IDS))]
        seed_env = {**os.environ, **self.s3.settings_for(self.bucket)}
        subprocess.run(argv, env=seed_env, check=True, capture_output=True, timeout=120)
        for replica in self.replicas:
            replica.start()

    def stop(self) -> None:
        for process in [*self.replicas, *self.redis_nodes(), self.s3]:
            faults.signal_pid(process, faults.signal.SIGCONT)
            process.stop()
        self.redis.stop()  # the sentinels too
        self.proxy.stop()

    def restart(self, process: stack.Managed) -> None:
        """Start a process a fault killed; again if it comes up while something else is down
        (a replica waits for a healthy Redis)."""
        for _ in range(5):
            if process.alive:
                process.kill()
            try:
                process.start()
                self.restarts += 1
                return
            except stack.StackError:
                time.sleep(0.5)
        raise stack.StackError(f"{process.name} would not start again")

    def redis_nodes(self) -> list[stack.RedisServer]:
        if self.redis_mode == "cluster":
            return list(self.redis.nodes)
        if self.redis_mode == "sentinel":
            return list(self.redis.nodes)
        return [self.redis]

    def heal(self) -> None:
        self.proxy.set_mode("open")
        for process in [*self.redis_nodes(), *self.replicas]:
            faults.signal_pid(process, faults.signal.SIGCONT)
            if not process.alive:
                self.restart(process)
        if self.redis_mode != "single":
            # The next primary kill needs a replica in sync to promote.
            stack.wait_for(self.redis.replicated, 60, f"the {self.redis_mode} to be whole again")

    def redis_client(self) -> Any:
        if self.redis_mode == "cluster":
            port = next(n.port for n in self.redis.nodes if n.alive)
            return redis.RedisCluster(host="127.0.0.1", port=port, socket_timeout=5)
        port = self.redis.primary_port() if self.redis_mode == "sentinel" else self.redis.port
        return redis.Redis(port=port, socket_timeout=5)

    def bundles(self) -> list[str]:
        client = boto3.client(
            "s3",
            endpoint_url=self.s3.endpoint,
            aws_access_key_id=stack.S3_KEY,
            aws_secret_access_key=stack.S3_SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10),
        )
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix="exports/"
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def stored_history(self, job_id: str) -> list[tuple[str, int, str]]:
        client = self.redis_client()
        try:
            entries = client.xrange(redis_keys.job_history(job_id), "-", "+")
        finally:
            client.close()
        out = []
        for _, fields in entries:
            for line in fields[b"f"].decode().splitlines():
                frame = json.loads(line)
                out.append((str(frame.get("epoch", "")), int(frame["seq"]), str(frame["type"])))
        return out


# --- one trial -----------------------------------------------------------------------------


async def run_trial(deployment: Deployment, seed: int, index: int) -> Trial:
    rng = random.Random(f"{seed}:{index}")
    plans = workload.plan_trial(rng, index)
    kinds = faults.kinds_for(deployment.redis_mode)
    fault_plans = faults.plan_faults(rng, list(deployment.by_name), LEASE_MS / 1000, kinds)
    if "primary_kill" in kinds and index % 3 == 0:
        fault_plans = faults.with_primary_kill(rng, fault_plans)
    trial = Trial(seed, index, hang_bound_s=HANG_BOUND_S)
    timeout = httpx.Timeout(5.0, connect=1.0)
    async with httpx.AsyncClient(timeout=timeout) as http:
        clients = workload.Clients(trial, deployment.replicas, http, random.Random(rng.random()))
        watchers = await drive(deployment, clients, plans, fault_plans)
        await asyncio.to_thread(deployment.heal)
        await settle(clients, deployment)
        await finish_watchers(watchers, HANG_BOUND_S)
        await read_outcomes(clients, deployment)
    return trial


async def drive(
    deployment: Deployment,
    clients: workload.Clients,
    plans: list[workload.JobPlan],
    fault_plans: list[faults.FaultPlan],
) -> list[asyncio.Task[None]]:
    """Run the workload and the faults; return the watcher tasks, still running."""
    trial, t0 = clients.trial, time.monotonic()
    muxes = {
        owner: workload.Mux(clients, owner, sum(
            1 for p in plans if p.owner == owner for w in p.watchers if w.transport == "mux"
        ))
        for owner in workload.OWNERS
    }  # fmt: skip
    watchers = [asyncio.ensure_future(mux.run()) for mux in muxes.values()]
    flows = [job_flow(clients, plan, muxes, watchers) for plan in plans]
    injected = [faults.inject(deployment, plan, trial, t0) for plan in fault_plans]
    async with asyncio.timeout(FLOW_BOUND_S):
        await asyncio.gather(*flows, *injected)
    return watchers


async def job_flow(
    clients: workload.Clients,
    plan: workload.JobPlan,
    muxes: dict[str, workload.Mux],
    tasks: list[asyncio.Task[None]],
) -> None:
    await asyncio.sleep(plan.start_after)
    job_id = await workload.initiate(clients, plan)
    mux_count = sum(1 for w in plan.watchers if w.transport == "mux")
    if job_id is None:
        for _ in range(mux_count):
            muxes[plan.owner].drop()
        return
    for i, wplan in enumerate(plan.watchers):
        watcher = Watcher(
            f"{wplan.transport}-{job_id[:8]}-{i}", job_id, wplan.transport, plan.owner
        )
        watcher.slow = wplan.slow
        clients.trial.watchers.append(watcher)
        tasks.append(asyncio.ensure_future(watch(clients, watcher, wplan, muxes)))
    extra = [workload.foreign_status(clients, plan.owner, job_id)]
    if plan.cancel_after is not None:
        extra.append(workload.cancel(clients, plan.owner, job_id, plan.cancel_after))
    await asyncio.gather(*extra)


async def watch(
    clients: workload.Clients,
    watcher: Watcher,
    plan: workload.WatcherPlan,
    muxes: dict[str, workload.Mux],
) -> None:
    reader = workload.Reader(watcher, plan)
    if plan.transport == "mux":
        muxes[watcher.owner].add(reader)
    elif plan.transport == "poll":
        await workload.poll(clients, reader)
    else:
        session = workload.ws_session if plan.transport == "ws" else workload.sse_session
        await workload.follow(clients, reader, session(clients))


async def settle(clients: workload.Clients, deployment: Deployment) -> None:
    """Read every job's status until it is terminal or gone (each within ``SETTLE_S``)."""
    await asyncio.gather(*(settle_one(clients, job) for job in clients.trial.jobs.values()))


async def settle_one(clients: workload.Clients, job: Job) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            target = clients.pick()
            response = await clients.http.get(
                f"{target.url}/v1/download/status/{job.job_id}",
                headers=workload.headers_of(job.owner),
            )
            if response.status_code == 404:
                job.final, job.settled = None, True
                return
            if response.status_code == 200:
                job.final = response.json()
                if job.final["status"] in TERMINAL:
                    job.settled = True
                    return
        await asyncio.sleep(0.1)


async def finish_watchers(tasks: list[asyncio.Task[None]], bound: float) -> None:
    """Every job has ended by now: a watcher still running after ``bound`` hangs."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=bound)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_outcomes(clients: workload.Clients, deployment: Deployment) -> None:
    trial = clients.trial
    for job in trial.jobs.values():
        job.terminal_at = first_terminal(trial, job)
        job.reference = await asyncio.to_thread(deployment.stored_history, job.job_id)
        if job.final_status == "completed":
            await download(clients, job)
    for _ in range(10):  # a losing attempt deletes its bundle after the winner has ended
        keys = await asyncio.to_thread(deployment.bundles)
        for job in trial.jobs.values():
            job.bundles = sorted(k for k in keys if k.startswith(f"exports/{job.job_id}."))
        if not list(checker.bundles(trial)):
            return
        await asyncio.sleep(0.5)


def first_terminal(trial: Trial, job: Job) -> float | None:
    times = [
        seen.t
        for watcher in trial.watchers
        if watcher.job_id == job.job_id
        for seen in watcher.seen
        if seen.terminal
    ]
    return min(times, default=None)


async def download(clients: workload.Clients, job: Job) -> None:
    """The result's downloadUrl, and each one a watcher's completed frame carried (unless a
    failover could still undo that completion), gives a valid zip."""
    op = Op("result", job.owner, time.monotonic(), job_id=job.job_id)
    path = f"/v1/download/result/{job.job_id}"
    response = await clients.request(op, "GET", path, headers=workload.headers_of(job.owner))
    if response is None or response.status_code != 200:
        job.download_ok, job.download_detail = False, f"result answered {op.code} {op.detail}"
        return
    urls = {response.json()["downloadUrl"]}
    urls |= {
        seen.download_url
        for watcher in clients.trial.watchers
        if watcher.job_id == job.job_id
        for seen in watcher.seen
        # A completion a failover may have undone (the job ran again) took its link along.
        if seen.status == "completed"
        and seen.download_url
        and not checker.undoable(clients.trial, seen.t)
    }
    job.download_ok = True
    for url in sorted(urls):
        ok, detail = await fetch_zip(clients, job, url)
        if not ok:
            job.download_ok, job.download_detail = False, detail


async def fetch_zip(clients: workload.Clients, job: Job, url: str) -> tuple[bool, str]:
    if url.startswith("/"):
        url = clients.targets[0].url + url  # a root-relative link (local storage)
    got = Op("download", job.owner, time.monotonic(), job_id=job.job_id)
    clients.trial.ops.append(got)
    try:
        bundle = await clients.http.get(url)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    got.code, got.t_end = bundle.status_code, time.monotonic()
    return valid_zip(bundle), f"{url}: {bundle.status_code}"


def valid_zip(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            return archive.testzip() is None and bool(archive.namelist())
    except zipfile.BadZipFile:
        return False


# --- many trials ---------------------------------------------------------------------------


class Summary:
    def __init__(self, seed: int, redis_mode: str = "single") -> None:
        self.seed, self.redis_mode = seed, redis_mode
        self.trials, self.started = 0, time.monotonic()
        self.faults: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.coverage: collections.Counter[str] = collections.Counter()
        self.operations = self.frames = self.watchers = self.jobs = 0
        self.violations: list[dict[str, Any]] = []

    def add(self, trial: Trial, found: list[checker.Violation]) -> None:
        self.trials += 1
        self.faults.update(fault.kind for fault in trial.faults)
        self.outcomes.update(str(job.final_status) for job in trial.jobs.values())
        self.operations += len(trial.ops)
        self.frames += sum(len(w.seen) for w in trial.watchers)
        self.watchers += len(trial.watchers)
        self.jobs += len(trial.jobs)
        self.coverage.update(coverage(trial))
        self.violations += [{"trial": trial.index, **v.to_dict()} for v in found]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "redis": self.redis_mode,
            "trials": self.trials,
            "seconds": round(time.monotonic() - self.started, 1),
            "faults": dict(sorted(self.faults.items())),
            "jobs": self.jobs,
            "outcomes": dict(sorted(self.outcomes.items())),
            "operations_checked": self.operations,
            "watchers": self.watchers,
            "frames_checked": self.frames,
            "coverage": dict(sorted(self.coverage.items())),
            "invariants": list(checker.INVARIANTS),
            "violations": len(self.violations),
            "violation_details": self.violations[:50],
            "replay": f"CHAOS_REDIS={self.redis_mode} CHAOS_SEED={self.seed} CHAOS_FIRST=<trial>"
            " CHAOS_TRIALS=1 make chaos",
        }


def coverage(trial: Trial) -> collections.Counter[str]:
    """What the trial exercised: so a summary shows the checks were not vacuous."""
    seen: collections.Counter[str] = collections.Counter()
    for watcher in trial.watchers:
        seen[f"watchers_{watcher.transport}"] += 1
        seen["watchers_slow"] += watcher.slow
        seen["resumes"] += sum(1 for c in watcher.connections if c.since is not None)
        seen["unrecovered_snapshots"] += sum(
            1 for f in watcher.seen if f.type == "snapshot" and not f.recovered
        )
    for op in trial.ops:
        seen[f"{op.kind}_{op.code}"] += 1
        seen["replayed"] += op.replayed
    seen["lost_jobs"] += sum(1 for job in trial.jobs.values() if job.lost)
    return seen


async def run(
    seed: int, trials: int, first: int = 0, log: Any = print, redis_mode: str = "single"
) -> Summary:
    summary = Summary(seed, redis_mode)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log(f"chaos: CHAOS_REDIS={redis_mode} CHAOS_SEED={seed} trials {first}..{first + trials - 1}")
    with tempfile.TemporaryDirectory(prefix="delineate-chaos-") as root:
        deployment = Deployment(Path(root), redis_mode=redis_mode)
        try:
            await asyncio.to_thread(deployment.start)
            for index in range(first, first + trials):
                if STOP.is_set():
                    log(f"chaos: stopped by a signal before trial {index}")
                    break
                started = time.monotonic()
                trial = await run_trial(deployment, seed, index)
                log(f"trial {index}: {time.monotonic() - started:.1f} s")
                found = checker.check(trial)
                summary.add(trial, found)
                if found:
                    save(trial, found)
                    log(f"trial {index}: {len(found)} violations: {found[0].detail}")
        finally:
            await asyncio.to_thread(keep_logs, deployment, seed)
            await asyncio.to_thread(deployment.stop)
    suffix = "" if redis_mode == "single" else f"-{redis_mode}"
    out = ARTIFACTS / f"summary-{seed}{suffix}.json"
    out.write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def save(trial: Trial, found: list[checker.Violation]) -> None:
    body = {"violations": [v.to_dict() for v in found], "trial": trial.to_dict()}
    path = ARTIFACTS / f"trial-{trial.seed}-{trial.index}.json"  # the seed is per run
    path.write_text(json.dumps(body, indent=1, default=str))


def keep_logs(deployment: Deployment, seed: int) -> None:
    """The processes' logs, for the trials that failed (the temporary directory goes)."""
    target = ARTIFACTS / f"logs-{seed}"
    target.mkdir(parents=True, exist_ok=True)
    for log in deployment.root.glob("*.log"):
        (target / log.name).write_bytes(log.read_bytes()[-2_000_000:])


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def main() -> int:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 31))
    trials = int(os.environ.get("CHAOS_TRIALS", "500"))
    first = int(os.environ.get("CHAOS_FIRST", "0"))
    redis_mode = os.environ.get("CHAOS_REDIS", "single")
    if redis_mode not in REDIS_MODES:
        print(f"CHAOS_REDIS must be one of {', '.join(REDIS_MODES)}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: STOP.set())
    summary = asyncio.run(run(seed, trials, first, log=to_stderr, redis_mode=redis_mode))
    print(json.dumps(summary.to_dict(), indent=2))
    return 1 if summary.violations else 0


if __name__ == "__main__":
    raise SystemExit(main())

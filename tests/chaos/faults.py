"""The faults a trial injects, and the S3 proxy that makes storage stop or hang.

``plan_faults`` is pure (the seed decides kind, target, start and length); ``inject`` runs one
against the deployment and records it; ``heal`` puts everything back (every replica running
and resumed, Redis up, S3 through). Processes are signalled by their own pid only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from delineate.devstack import stack
from tests.chaos.history import Fault, Trial

KINDS = ("kill", "pause", "redis_restart", "redis_wipe", "s3_down", "s3_hang")
HA_KINDS = ("kill", "pause", "primary_kill", "s3_down", "s3_hang")
RESOURCE = {
    "redis_restart": "redis", "redis_wipe": "redis", "primary_kill": "redis",
    "s3_down": "s3", "s3_hang": "s3",
}  # fmt: skip


def kinds_for(redis_mode: str) -> tuple[str, ...]:
    """One node: restarts with and without its data. Cluster and Sentinel: a primary killed
    (failed over if it stays down past the node timeout, or back with its AOF if not)."""
    return KINDS if redis_mode == "single" else HA_KINDS


@dataclass
class FaultPlan:
    kind: str
    target: str  # a replica's name, "redis" or "s3"
    start: float  # seconds after the trial starts
    length: float  # how long the fault lasts


def plan_faults(
    rng: random.Random, replicas: list[str], lease_s: float, kinds: tuple[str, ...] = KINDS
) -> list[FaultPlan]:
    """Zero to two faults on distinct resources. Pauses are sometimes longer than a lease;
    a killed primary mostly stays down past the failover timeout (1 s)."""
    plans: list[FaultPlan] = []
    used: set[str] = set()
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2])):
        kind = rng.choice(kinds)
        target = RESOURCE.get(kind) or rng.choice(replicas)
        if target in used:
            continue
        used.add(target)
        length = rng.uniform(0.2, 1.5)
        if kind == "pause" and rng.random() < 0.5:
            length = rng.uniform(lease_s + 0.3, lease_s * 2.5)
        if kind in ("s3_hang", "primary_kill"):
            length = rng.uniform(0.5, 4.0)
        plans.append(FaultPlan(kind, target, rng.uniform(0.0, 1.2), length))
    return plans


def with_primary_kill(rng: random.Random, plans: list[FaultPlan]) -> list[FaultPlan]:
    """``plans`` with a primary kill in place of any other Redis fault: every third trial on
    Cluster or Sentinel has one, so even a short run fails a primary over."""
    if any(plan.kind == "primary_kill" for plan in plans):
        return plans
    kept = [plan for plan in plans if plan.target != "redis"]
    return [*kept, FaultPlan("primary_kill", "redis", rng.uniform(0.0, 1.2), rng.uniform(1.5, 4))]


class Deployed(Protocol):
    """What the faults act on (``harness.Deployment``)."""

    redis: Any  # RedisServer, RedisCluster or RedisSentinels
    redis_mode: str
    proxy: S3Proxy
    by_name: dict[str, stack.Replica]

    def restart(self, process: stack.Managed) -> None: ...


async def inject(deployment: Deployed, plan: FaultPlan, trial: Trial, t0: float) -> None:
    await asyncio.sleep(max(0.0, t0 + plan.start - time.monotonic()))
    fault = Fault(plan.kind, plan.target, time.monotonic(), detail=f"{plan.length:.2f}s")
    trial.faults.append(fault)
    try:
        await ACTIONS[plan.kind](deployment, plan, trial)
    finally:
        fault.t_end = time.monotonic()


async def kill(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    replica = deployment.by_name[plan.target]
    signal_pid(replica, signal.SIGKILL)
    await asyncio.to_thread(reap, replica)
    await asyncio.sleep(plan.length)
    await asyncio.to_thread(deployment.restart, replica)


async def pause(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    replica = deployment.by_name[plan.target]
    signal_pid(replica, signal.SIGSTOP)
    try:
        await asyncio.sleep(plan.length)
    finally:
        signal_pid(replica, signal.SIGCONT)


async def redis_restart(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    """kill -9 with appendfsync always: it comes back with every acknowledged write."""
    signal_pid(deployment.redis, signal.SIGKILL)
    await asyncio.to_thread(reap, deployment.redis)
    await asyncio.sleep(plan.length)
    await asyncio.to_thread(deployment.restart, deployment.redis)


async def redis_wipe(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    """kill -9 and start with no data: what a Redis without persistence comes back with."""
    signal_pid(deployment.redis, signal.SIGKILL)
    await asyncio.to_thread(reap, deployment.redis)
    for entry in deployment.redis.dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    await asyncio.sleep(plan.length)
    trial.wipes.append(time.monotonic())
    await asyncio.to_thread(deployment.restart, deployment.redis)


async def primary_kill(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    """kill -9 of a Redis primary (Cluster: one of three at random). Replication is
    asynchronous, so a failover may lose the last acknowledged writes: for the checker that
    is Redis losing data, from the kill until the old primary is back as a replica (until
    then it may take writes of its own that the group then drops)."""
    group = deployment.redis
    if deployment.redis_mode == "cluster":
        ports = await asyncio.to_thread(group.primary_ports)
        victim = group.node(random.Random(plan.start).choice(ports)) if ports else None
    else:
        victim = group.node_of(await asyncio.to_thread(group.primary_port))
    if victim is None:  # mid-failover already: nothing to kill
        return
    trial.wipes.append(time.monotonic())
    signal_pid(victim, signal.SIGKILL)
    await asyncio.to_thread(reap, victim)
    await asyncio.sleep(plan.length)
    await asyncio.to_thread(deployment.restart, victim)
    await asyncio.to_thread(stack.wait_for, group.replicated, 60, "the old primary to follow")
    trial.wipes.append(time.monotonic())


async def s3_down(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    deployment.proxy.set_mode("down")
    await asyncio.sleep(plan.length)
    deployment.proxy.set_mode("open")


async def s3_hang(deployment: Deployed, plan: FaultPlan, trial: Trial) -> None:
    deployment.proxy.set_mode("hang")
    await asyncio.sleep(plan.length)
    deployment.proxy.set_mode("open")


ACTIONS = {
    "kill": kill,
    "pause": pause,
    "redis_restart": redis_restart,
    "redis_wipe": redis_wipe,
    "primary_kill": primary_kill,
    "s3_down": s3_down,
    "s3_hang": s3_hang,
}


def signal_pid(process: stack.Managed, signum: int) -> None:
    if process.pid is not None and process.alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def reap(process: stack.Managed) -> None:
    if process.popen is not None:
        process.popen.wait(10)


# --- S3 behind a proxy that can refuse or hang ---------------------------------------------


class S3Proxy:
    """A loopback TCP proxy in front of SeaweedFS, on a thread of its own (so the harness's
    own blocking moments never stall storage). Modes: ``open`` relays; ``down`` drops every
    connection and refuses new ones (S3 stopped); ``hang`` accepts and relays nothing in
    either direction until it opens again (S3 hung)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = stack.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        self._call(self._open())

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set_mode(self, mode: str) -> None:
        self._call({"open": self._open, "down": self._close, "hang": self._hang}[mode]())

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", self.port, reuse_address=True
            )
        self._flowing.set()

    async def _hang(self) -> None:
        await self._open()
        self._flowing.clear()

    async def _close(self) -> None:
        self._flowing.set()
        server, self._server = self._server, None  # a relay that starts now drops its client
        if server is not None:
            # Accepts under way must attach to the server before it closes: on Python 3.11 one
            # that comes after close() fails silently and leaks its socket.
            while accepting := [
                t for t in asyncio.all_tasks() if "_accept_connection" in repr(t.get_coro())
            ]:
                await asyncio.wait(accepting)
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        """Close, end every relay, and give the loop the turns in which aborted transports
        close their sockets (a loop stopped first leaves them to the garbage collector)."""
        await self._close()
        # Tasks are let run before any is cancelled: an accepted socket is closed only by its
        # relay's first step (seeing the proxy down), and accepting spawns the relay task.
        for _ in range(5):
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if not tasks:
                break
            _, stuck = await asyncio.wait(tasks, timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        for _ in range(3):
            await asyncio.sleep(0)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before the proxy went down
            client_w.transport.abort()
            return
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        self._writers.add(server_w)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w), self._pipe(server_r, client_w),
                return_exceptions=True,
            )  # fmt: skip
        finally:
            self._writers -= {client_w, server_w}

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                sink.close()

"""Redis Cluster and Sentinel under faults, against real processes: kill -9 of a Redis
primary while 50 jobs run and 500 watchers (WebSocket, SSE, the SDK) follow them through two
replicas, on a Cluster (3 primaries + 3 replicas) and with Sentinels (primary + replica +
3 sentinels); and a slot migration (``redis-cli --cluster reshard``) while frames flow.

Every job ends in exactly one terminal state that agrees with its status document; every
watcher gets every frame once in seq order, or a ``recovered: false`` snapshot followed by
every later frame of the new epoch, and then the terminal frame; nobody hangs. The counts
are printed (``-s``) and asserted."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.clients import AVAILABLE, initiate, sse_events, ws_collect
from tests.support.processes import Replica, require_binary
from tests.support.services import Backend, SeaweedS3

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "cancelled"}
JOBS = 50
WATCHERS = 500
ENV = {
    "JOB_CONCURRENCY": "32",
    "DOWNLOAD_DELAY_MIN_MS": "8000",
    "DOWNLOAD_DELAY_MAX_MS": "10000",
    "PROGRESS_INTERVAL_MS": "100",
    "JOB_LEASE_MS": "2000",
    "MAX_SOCKETS_PER_IP": "5000",
}


@pytest.fixture(params=["cluster", "sentinel"])
def ha_backend(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: SeaweedS3
) -> Iterator[Backend]:
    backend = Backend(str(request.param), tmp_path, s3_server)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def cluster_backend(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Backend]:
    backend = Backend("cluster", tmp_path, s3_server)
    backend.start()
    yield backend
    backend.stop()


class Tally:
    """What the watchers saw, over all of them."""

    def __init__(self) -> None:
        self.watchers = 0
        self.frames = 0
        self.gaps_announced = 0
        self.by_transport: collections.Counter[str] = collections.Counter()

    def __str__(self) -> str:
        return (
            f"{self.watchers} watchers ({dict(self.by_transport)}), {self.frames} frames, "
            f"{self.gaps_announced} recovered=false snapshots"
        )


def check_watch(frames: list[dict[str, Any]], tally: Tally) -> str:
    """Assert one watcher's frames keep the promise; return the terminal status it saw.

    Within an epoch seqs go up by exactly one (every frame, once, in order); a new epoch
    comes only with a ``recovered: false`` snapshot; the last frame is the one terminal one
    (a terminal frame, or a snapshot of an ended job)."""
    assert frames, "a watcher got nothing"
    epoch: str | None = None
    seq = -1
    ended: str | None = None
    for i, frame in enumerate(frames):
        assert ended is None, f"a frame after the terminal one: {frame}"
        kind = frame["type"]
        if kind == "snapshot":
            if i > 0:
                assert frame["recovered"] is False, f"a snapshot mid-stream: {frame}"
                tally.gaps_announced += 1
            epoch, seq = frame["epoch"], frame["seq"]
            if frame["job"]["status"] in TERMINAL:
                ended = frame["job"]["status"]
            continue
        assert frame["epoch"] == epoch, f"epoch changed unannounced: {frame} after {epoch}"
        assert frame["seq"] == seq + 1, f"seq {frame['seq']} after {seq}: lost or repeated"
        seq = frame["seq"]
        if kind in TERMINAL:
            ended = kind
    assert ended is not None, f"no terminal frame: {frames[-3:]}"
    tally.frames += len(frames)
    return ended


def check_sdk(frames: list[Any], tally: Tally) -> str:
    """The SDK resumes by itself and hands over each frame once: per epoch, seqs only go
    up, and the last frame is the one terminal one."""
    assert frames, "an SDK watcher got nothing"
    last: tuple[str, int] | None = None
    for frame in frames[:-1]:
        assert type(frame).__name__.removesuffix("Frame").lower() not in TERMINAL, frames[-3:]
    for frame in frames:
        if last is not None and frame.epoch == last[0]:
            assert frame.seq > last[1], f"seq {frame.seq} after {last[1]}"
        last = (frame.epoch, frame.seq)
    end = frames[-1]
    kind = type(end).__name__.removesuffix("Frame").lower()
    status = end.job.status.value if kind == "snapshot" else kind
    assert status in TERMINAL, frames[-3:]
    tally.frames += len(frames)
    return str(status)


async def arriving(follow: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """A watcher that arrives while Redis is away is refused (a 503, or an error frame or a
    close before any frame): it asks again, as the SDK and the page do. Once in, it stays."""
    for _ in range(100):
        try:
            frames = await follow()
        except AssertionError as exc:  # the event stream's answer was not 200
            if "Service Unavailable" not in str(exc):
                raise
        else:
            if frames and frames[0].get("type") != "error":
                return frames
        await asyncio.sleep(0.2)
    raise AssertionError("Redis stayed away for 100 tries")


async def watch_ws(replica: Replica, job_id: str) -> list[dict[str, Any]]:
    url = f"{replica.ws_url}/v1/download/subscribe/{job_id}"
    return await arriving(lambda: _ws_frames(url))


async def _ws_frames(url: str) -> list[dict[str, Any]]:
    return (await ws_collect(url, timeout=120)).frames


async def watch_sse(http: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    async def follow() -> list[dict[str, Any]]:
        events, _ = await sse_events(http, f"/v1/download/stream/{job_id}", timeout=120)
        return [event["data"] for event in events]

    return await arriving(follow)


async def watch_sdk(client: Any, job_id: str) -> list[Any]:
    from delineate_client.subscription import Subscription

    subscription = Subscription(client, job_id, None, False, ("websocket", "sse"))
    return [frame async for frame in subscription.frames()]


async def run_and_watch(
    replicas: list[Replica], fault: Any, jobs_count: int = JOBS, watchers_count: int = WATCHERS
) -> tuple[Tally, dict[str, int]]:
    """50 jobs, 500 watchers over both replicas (WS, SSE, SDK in turn); ``fault()`` once the
    frames flow; then every check. One HTTP client per replica and transport: making one
    per watcher costs the test's loop seconds (TLS contexts) and the watchers time out."""
    from delineate_client import AsyncClient

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=r.url, timeout=120, limits=limits)
            )
            for r in replicas
        ]
        sdks = [
            await stack.enter_async_context(AsyncClient(r.url, http=https[i]))
            for i, r in enumerate(replicas)
        ]
        http = https[0]
        jobs = [(await initiate(http, [AVAILABLE[i % 3]]))["jobId"] for i in range(jobs_count)]
        watchers = []
        for i in range(watchers_count):
            job_id, side = jobs[i % jobs_count], i % 2
            kind = ("ws", "sse", "sdk")[i % 3]
            if kind == "ws":
                follow = watch_ws(replicas[side], job_id)
            elif kind == "sse":
                follow = watch_sse(https[side], job_id)
            else:
                follow = watch_sdk(sdks[side], job_id)
            watchers.append((kind, job_id, asyncio.ensure_future(follow)))
        await asyncio.sleep(3)
        await fault()
        ended = await asyncio.wait_for(
            asyncio.gather(*(w[2] for w in watchers), return_exceptions=True), 150
        )
        errors = [repr(o) for o in ended if isinstance(o, BaseException)]
        assert not errors, f"{len(errors)} watchers failed: {errors[:5]}"
        results = [o for o in ended if not isinstance(o, BaseException)]
        documents = {j: (await http.get(f"/v1/download/status/{j}")).json() for j in jobs}
    tally = Tally()
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for (kind, job_id, _), frames in zip(watchers, results, strict=True):
        try:
            status = check_sdk(frames, tally) if kind == "sdk" else check_watch(frames, tally)
        except AssertionError as exc:
            brief = [(f["type"], f["seq"], f["epoch"], f["ts"]) for f in frames if kind != "sdk"]
            raise AssertionError(f"{kind} watcher of {job_id}: {exc}; {brief}") from None
        seen[job_id].add(status)
        tally.watchers += 1
        tally.by_transport[kind] += 1
    outcomes: collections.Counter[str] = collections.Counter()
    for job_id, document in documents.items():
        assert document["status"] in TERMINAL, document
        assert seen[job_id] == {document["status"]}, (job_id, seen[job_id], document["status"])
        outcomes[document["status"]] += 1
    assert tally.watchers == watchers_count
    return tally, dict(outcomes)


async def test_killing_a_redis_primary_loses_no_job_and_no_frame(
    ha_backend: Backend, tmp_path: Path
) -> None:
    """kill -9 of the primary holding the first job (Cluster: its replica takes the slots
    over; Sentinel: the sentinels promote the replica) while everything runs."""
    env = {**ha_backend.env(), **ENV}
    replicas = [Replica(f"replica-{i}", env, tmp_path) for i in range(2)]
    for replica in replicas:
        replica.start()
    group = ha_backend.redis
    killed: list[int] = []

    async def kill_a_primary() -> None:
        if ha_backend.kind == "cluster":
            victim = group.node(group.primary_ports()[0])
        else:
            victim = group.node_of(group.primary_port())
        killed.append(victim.port)
        victim.kill()

    try:
        tally, outcomes = await run_and_watch(replicas, kill_a_primary)
    finally:
        for replica in replicas:
            replica.stop()
    if ha_backend.kind == "sentinel":
        assert group.primary_port() != killed[0]  # the replica was promoted
    else:
        ports = group.primary_ports()
        assert killed[0] not in ports  # its replica took over
        assert len(ports) == 3
    print(f"{ha_backend.kind}: primary killed; jobs {outcomes}; {tally}")
    assert outcomes == {"completed": JOBS}


async def test_a_slot_migration_while_frames_flow_loses_no_frame(
    cluster_backend: Backend, tmp_path: Path
) -> None:
    """``redis-cli --cluster reshard`` moves every slot of one primary (so the running jobs
    there, with their history and shard channels) to another while 50 jobs run and 500
    watchers follow: the listeners follow the slots, no frame is lost or repeated."""
    env = {**cluster_backend.env(), **ENV}
    replicas = [Replica(f"replica-{i}", env, tmp_path) for i in range(2)]
    for replica in replicas:
        replica.start()
    group = cluster_backend.redis
    cli = require_binary("redis-cli")
    done: list[subprocess.CompletedProcess[str]] = []

    async def reshard() -> None:
        source, target = (group.node(port) for port in group.primary_ports()[:2])
        ids = [await asyncio.to_thread(node_id, node.port) for node in (source, target)]
        argv = [
            cli, "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from", ids[0],
            "--cluster-to", ids[1], "--cluster-slots", str(group.slot_count(source.port)),
            "--cluster-yes",
        ]  # fmt: skip
        run = subprocess.run
        done.append(await asyncio.to_thread(run, argv, capture_output=True, text=True, timeout=120))

    try:
        tally, outcomes = await run_and_watch(replicas, reshard)
    finally:
        for replica in replicas:
            replica.stop()
    assert done[0].returncode == 0, done[0].stdout[-2000:] + done[0].stderr
    assert len(group.primary_ports()) == 2  # the source owns no slot any more
    print(f"cluster: one primary's slots resharded; jobs {outcomes}; {tally}")
    assert outcomes == {"completed": JOBS}


def node_id(port: int) -> str:
    import redis

    with redis.Redis(port=port, socket_timeout=2) as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


@pytest.fixture
def sentinel_backend(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Backend]:
    backend = Backend("sentinel", tmp_path, s3_server)
    backend.start()
    yield backend
    backend.stop()


async def test_a_failover_that_lost_writes_moves_the_jobs_to_a_new_epoch(
    sentinel_backend: Backend, tmp_path: Path
) -> None:
    """The replicas are stopped (SIGSTOP) and their links cut while jobs write frames, so the
    primary acknowledges writes the replicas never get; then the primary is killed and a
    replica, resumed, is promoted without them. The jobs' writers are ahead of the new
    primary: each job moves to a new epoch, and every watcher gets a ``recovered: false``
    snapshot, then every later frame and the terminal one (none drops them as duplicates)."""
    env = {**sentinel_backend.env(), **ENV}
    replicas = [Replica(f"replica-{i}", env, tmp_path) for i in range(2)]
    for replica in replicas:
        replica.start()
    group = sentinel_backend.redis

    async def lose_writes() -> None:
        stale = group.node_of(group.primary_port())
        followers = [node for node in group.nodes if node is not stale]
        for follower in followers:
            assert follower.popen is not None
            follower.popen.send_signal(signal.SIGSTOP)
        try:
            with redis.Redis(port=stale.port, socket_timeout=2) as primary:
                # Without the stack's write guard, as Redis runs by default: the primary
                # acknowledges writes that no replica has.
                primary.config_set("min-replicas-to-write", 0)
                # Cut the replication links too: what the primary sent before sits in the
                # stopped replicas' socket buffers and would still arrive; what follows won't.
                primary.execute_command("CLIENT", "KILL", "TYPE", "replica")
            await asyncio.sleep(1.5)  # frames acknowledged by the primary alone
            stale.kill()
            await asyncio.sleep(0.5)
        finally:
            for follower in followers:
                assert follower.popen is not None
                follower.popen.send_signal(signal.SIGCONT)

    try:
        tally, outcomes = await run_and_watch(replicas, lose_writes, 10, 60)
    finally:
        for replica in replicas:
            replica.stop()
    print(f"sentinel: writes lost in a failover; jobs {outcomes}; {tally}")
    assert outcomes == {"completed": 10}
    # Every WebSocket and SSE watcher (40 of the 60) was moved: a recovered=false snapshot.
    assert tally.gaps_announced >= 40

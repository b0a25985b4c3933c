"""The clients of a trial: initiates (with and without Idempotency-Key, concurrent retries),
cancels, and watchers over every transport (single-job WebSocket, multiplexed /v1/ws, SSE,
polling) that resume with their last position after a disconnect. Each records into the
trial's history (``tests.chaos.history``); none of them judges anything.

``plan_trial`` is pure: the seed decides every choice; the processes decide the timing.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.chaos.history import Connection, Op, Seen, Trial, Watcher

OWNERS = {"alice": "key-alice", "bob": "key-bob"}
API_KEYS = ",".join(f"{owner}:{key}" for owner, key in OWNERS.items())
FILE_IDS = [70000, 70007, 70014, 70021, 70028]
UNAVAILABLE = 99999
TRANSPORTS = ("ws", "mux", "sse", "poll")
RECONNECTS = 60
"""Connections one watcher may open (each failed one waits a little): bounded, not endless."""


class Target(Protocol):
    name: str
    url: str
    ws_url: str


@dataclass
class WatcherPlan:
    transport: str
    slow: bool = False
    hangup_after: int | None = None  # hang up after this many frames, then resume
    from_start: bool = False  # first connect with since=0: the whole history replayed


@dataclass
class JobPlan:
    owner: str
    file_ids: list[int]
    start_after: float = 0.0  # seconds after the trial starts: jobs overlap the faults
    key: str | None = None
    copies: int = 1  # concurrent initiates with the key
    cancel_after: float | None = None
    watchers: list[WatcherPlan] = field(default_factory=list)


def plan_trial(rng: random.Random, trial: int) -> list[JobPlan]:
    counters = dict.fromkeys(OWNERS, 0)
    plans = []
    for _ in range(rng.randint(3, 6)):
        owner = rng.choice(sorted(OWNERS))
        plan = JobPlan(owner, rng.sample(FILE_IDS, rng.randint(1, 3)), rng.uniform(0.0, 1.5))
        if rng.random() < 0.15:
            plan.file_ids.append(UNAVAILABLE)
        if rng.random() < 0.5:
            counters[owner] += 1  # alice's order-1 and bob's order-1 share a key on purpose
            plan.key = f"t{trial}-order-{counters[owner]}"
            plan.copies = rng.choice([1, 2, 3, 5])
        if rng.random() < 0.35:
            plan.cancel_after = rng.uniform(0.05, 0.6)
        plan.watchers = [plan_watcher(rng) for _ in range(rng.randint(1, 4))]
        for extra in [w for w in plan.watchers if w.transport == "mux"][1:]:
            extra.transport = "ws"  # one socket follows a job once
        plans.append(plan)
    return plans


def plan_watcher(rng: random.Random) -> WatcherPlan:
    transport = rng.choice(TRANSPORTS)
    slow = transport != "poll" and rng.random() < 0.25
    hangup = rng.randint(1, 6) if transport in ("ws", "sse") and rng.random() < 0.3 else None
    from_start = transport in ("ws", "sse") and rng.random() < 0.2
    return WatcherPlan(transport, slow, hangup, from_start)


def headers_of(owner: str, **extra: str) -> dict[str, str]:
    return {"X-API-Key": OWNERS[owner], **extra}


def seen_of(frame: dict[str, Any], now: float) -> Seen:
    kind = frame["type"]
    job = frame.get("job") or {}
    status = job.get("status") if kind == "snapshot" else kind
    error = frame.get("error") or job.get("error") or {}
    return Seen(
        type=kind,
        seq=int(frame["seq"]),
        epoch=str(frame.get("epoch", "")),
        t=now,
        recovered=bool(frame.get("recovered", True)),
        status=status if kind in ("snapshot", "completed", "failed", "cancelled") else None,
        error_code=error.get("code"),
        download_url=frame.get("downloadUrl") or job.get("downloadUrl"),
    )


def position(watcher: Watcher) -> str | None:
    if not watcher.seen:
        return None
    last = watcher.seen[-1]
    return f"{last.epoch}:{last.seq}" if last.epoch else str(last.seq)


class Clients:
    """What every client of one trial shares: the replicas, the HTTP client, the history."""

    def __init__(
        self, trial: Trial, targets: list[Target], http: httpx.AsyncClient, rng: random.Random
    ) -> None:
        self.trial, self.targets, self.http, self.rng = trial, targets, http, rng

    def pick(self) -> Target:
        return self.rng.choice(self.targets)

    async def request(self, op: Op, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """One request to a random replica, recorded in ``op``; None when nothing answered."""
        target = self.pick()
        self.trial.ops.append(op)
        try:
            response = await self.http.request(method, f"{target.url}{path}", **kwargs)
        except httpx.HTTPError as exc:
            op.t_end, op.detail = time.monotonic(), f"{target.name}: {type(exc).__name__}"
            return None
        op.t_end, op.code = time.monotonic(), response.status_code
        op.detail = target.name
        return response


# --- initiate, cancel ----------------------------------------------------------------------


async def initiate(clients: Clients, plan: JobPlan) -> str | None:
    """Create the plan's job: ``copies`` concurrent requests when it has a key, retried
    (same key) until one answers 202. Without a key, one request, retried only when nothing
    answered (a job made by an unanswered request is not followed)."""
    headers = headers_of(plan.owner, **({"Idempotency-Key": plan.key} if plan.key else {}))
    body = {"file_ids": plan.file_ids}
    for _ in range(20):
        answers = await asyncio.gather(
            *(one_initiate(clients, plan, headers, body) for _ in range(plan.copies))
        )
        created = [job_id for job_id in answers if job_id is not None]
        if created:
            return created[0]
        await asyncio.sleep(0.3)
    return None


async def one_initiate(
    clients: Clients, plan: JobPlan, headers: dict[str, str], body: dict[str, Any]
) -> str | None:
    op = Op("initiate", plan.owner, time.monotonic(), key=plan.key)
    response = await clients.request(
        op, "POST", "/v1/download/initiate", json=body, headers=headers
    )
    if response is None or response.status_code != 202:
        if response is not None:
            op.detail += f" {response.text[:200]}"
        return None
    op.job_id = str(response.json()["jobId"])
    op.replayed = response.headers.get("idempotent-replayed") == "true"
    clients.trial.job(op.job_id, plan.owner)
    return op.job_id


async def cancel(clients: Clients, owner: str, job_id: str, after: float) -> None:
    await asyncio.sleep(after)
    op = Op("cancel", owner, time.monotonic(), job_id=job_id)
    path = f"/v1/download/cancel/{job_id}"
    response = await clients.request(op, "POST", path, headers=headers_of(owner))
    if response is not None and response.headers.get("content-type", "").startswith("app"):
        op.status = response.json().get("status")


async def foreign_status(clients: Clients, owner: str, job_id: str) -> None:
    """Another owner asks for the job: it must look like no job at all."""
    other = next(o for o in OWNERS if o != owner)
    op = Op("foreign_status", other, time.monotonic(), job_id=job_id)
    path = f"/v1/download/status/{job_id}"
    await clients.request(op, "GET", path, headers=headers_of(other))


# --- watchers ------------------------------------------------------------------------------


class Reader:
    """Records frames into one watcher; the transports below call it."""

    def __init__(self, watcher: Watcher, plan: WatcherPlan) -> None:
        self.watcher, self.plan = watcher, plan
        self.hung_up = False

    def take(self, frame: dict[str, Any]) -> Seen:
        seen = seen_of(frame, time.monotonic())
        self.watcher.seen.append(seen)
        return seen

    def should_hang_up(self) -> bool:
        """Once, after ``hangup_after`` frames: leave, to resume with the last position."""
        limit = self.plan.hangup_after
        if self.hung_up or limit is None or len(self.watcher.seen) < limit:
            return False
        self.hung_up = True
        return True

    def terminal_seen(self) -> bool:
        return any(seen.terminal for seen in self.watcher.seen)

    def finish(self, end: str) -> None:
        self.watcher.ended_at, self.watcher.end = time.monotonic(), end


async def pause_if_slow(reader: Reader, rng: random.Random) -> None:
    if reader.plan.slow:
        await asyncio.sleep(rng.uniform(0.02, 0.15))


Session = Callable[[Reader, Target, Connection], Awaitable[bool]]


async def follow(clients: Clients, reader: Reader, session: Session) -> None:
    """Connect, read, and on a cut reconnect (another replica, maybe) from the last
    position, until the stream ends after a terminal frame or the job is gone."""
    for _ in range(RECONNECTS):
        target = clients.pick()
        since = position(reader.watcher)
        if since is None and reader.plan.from_start:
            since = "0"  # a bare seq: the job's current epoch
        conn = Connection(target.name, since, time.monotonic())
        reader.watcher.connections.append(conn)
        try:
            done = await session(reader, target, conn)
        except (OSError, InvalidHandshake, httpx.HTTPError, TimeoutError) as exc:
            conn.ended, done = f"error:{type(exc).__name__}", False
        conn.t_end = time.monotonic()
        if done:
            return
        if reader.terminal_seen():
            reader.finish("terminal")  # the stream was cut after its terminal frame
            return
        await asyncio.sleep(clients.rng.uniform(0.05, 0.3))
    reader.finish("gave_up")


def ws_session(clients: Clients) -> Session:
    async def run(reader: Reader, target: Target, conn: Connection) -> bool:
        watcher = reader.watcher
        since = f"?since={conn.since}" if conn.since else ""
        url = f"{target.ws_url}/v1/download/subscribe/{watcher.job_id}{since}"
        async with connect(
            url, additional_headers=headers_of(watcher.owner), open_timeout=3, max_queue=4
        ) as ws:
            return await ws_read(reader, ws, conn, clients.rng)

    return run


async def ws_read(
    reader: Reader, ws: ClientConnection, conn: Connection, rng: random.Random
) -> bool:
    try:
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "error":
                reader.watcher.notes.append(f"error {message.get('code')}")
                if message.get("code") == "not_found":
                    reader.finish("gone")
                    return True
                continue
            reader.take(message)
            if reader.should_hang_up() and not reader.terminal_seen():
                conn.ended = "hangup"
                return False
            await pause_if_slow(reader, rng)
    except ConnectionClosed:
        pass
    conn.ended = f"closed:{ws.close_code}"
    if reader.terminal_seen():
        reader.finish("terminal")
        return True
    return False


def sse_session(clients: Clients) -> Session:
    async def run(reader: Reader, target: Target, conn: Connection) -> bool:
        watcher = reader.watcher
        headers = headers_of(watcher.owner)
        url = f"{target.url}/v1/download/stream/{watcher.job_id}"
        if conn.since == "0":
            url += "?since=0"  # the first request's way; a reconnect sends Last-Event-ID
        elif conn.since:
            headers["Last-Event-ID"] = conn.since
        async with clients.http.stream("GET", url, headers=headers) as response:
            if response.status_code == 404:
                reader.finish("gone")
                return True
            if response.status_code != 200:
                conn.ended = f"status:{response.status_code}"
                return False
            return await sse_read(reader, response, conn, clients.rng)

    return run


async def sse_read(
    reader: Reader, response: httpx.Response, conn: Connection, rng: random.Random
) -> bool:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            reader.take(json.loads("\n".join(data)))
            data = []
            if reader.should_hang_up() and not reader.terminal_seen():
                conn.ended = "hangup"
                return False
            await pause_if_slow(reader, rng)
    conn.ended = "eof"
    if reader.terminal_seen():
        reader.finish("terminal")
        return True
    return False


async def poll(clients: Clients, reader: Reader) -> None:
    """Status documents every ~60 ms; a few more after the first terminal one (it must stay)."""
    watcher, after_end = reader.watcher, 0
    for _ in range(2000):
        op = Op("status", watcher.owner, time.monotonic(), job_id=watcher.job_id)
        path = f"/v1/download/status/{watcher.job_id}"
        response = await clients.request(op, "GET", path, headers=headers_of(watcher.owner))
        clients.trial.ops.remove(op)  # observations, counted as frames
        if response is not None and response.status_code == 404:
            reader.finish("gone")
            return
        if response is not None and response.status_code == 200:
            doc = response.json()
            seen = Seen("poll", int(doc["seq"]), str(doc.get("epoch", "")), time.monotonic())
            seen.status = doc["status"]
            watcher.seen.append(seen)
            after_end += seen.terminal
            if after_end >= 3:
                reader.finish("terminal")
                return
        await asyncio.sleep(clients.rng.uniform(0.03, 0.09))
    reader.finish("gave_up")


# --- the multiplexed socket ----------------------------------------------------------------


class Mux:
    """One /v1/ws socket per owner, following all of that owner's ``mux`` watchers; on a cut
    it reconnects and subscribes again to the unfinished ones from their positions."""

    def __init__(self, clients: Clients, owner: str, expected: int) -> None:
        self.clients, self.owner, self.expected = clients, owner, expected
        self.readers: dict[str, Reader] = {}
        self.ws: ClientConnection | None = None
        self.subscribed: set[str] = set()  # on the current connection
        self.changed = asyncio.Event()

    def add(self, reader: Reader) -> None:
        self.readers[reader.watcher.job_id] = reader
        self.changed.set()

    def drop(self) -> None:
        """A planned job was never made: expect one watcher less."""
        self.expected -= 1
        self.changed.set()

    def done(self) -> bool:
        ended = sum(1 for r in self.readers.values() if r.watcher.ended_at is not None)
        return ended >= self.expected

    async def run(self) -> None:
        for _ in range(RECONNECTS):
            if self.done():
                return
            if not self.readers:
                self.changed.clear()
                await self.changed.wait()
                continue
            await self.connection()
            if not self.done():
                await asyncio.sleep(self.clients.rng.uniform(0.05, 0.3))
        for reader in self.readers.values():
            if reader.watcher.ended_at is None:
                reader.finish("gave_up")

    async def connection(self) -> None:
        target = self.clients.pick()
        url = f"{target.ws_url}/v1/ws"
        started = time.monotonic()
        conns = {
            job: self.connect_record(reader, target.name, started)
            for job, reader in self.readers.items()
        }
        try:
            async with connect(
                url, additional_headers=headers_of(self.owner), open_timeout=3, max_queue=4
            ) as ws:
                ended = await self.session(ws)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            ended = f"error:{type(exc).__name__}"
        for conn in conns.values():
            conn.t_end, conn.ended = time.monotonic(), conn.ended or ended

    def connect_record(self, reader: Reader, replica: str, started: float) -> Connection:
        conn = Connection(replica, position(reader.watcher), started)
        if reader.watcher.ended_at is None:
            reader.watcher.connections.append(conn)
        return conn

    async def session(self, ws: ClientConnection) -> str:
        self.subscribed = set()
        pump = asyncio.ensure_future(self.subscriber(ws))
        try:
            async for raw in ws:
                self.receive(json.loads(raw))
                if self.done():
                    return "done"
        except ConnectionClosed:
            pass
        finally:
            pump.cancel()
            await asyncio.wait([pump])  # never swallows a cancel of this task
        return f"closed:{ws.close_code}"

    async def subscriber(self, ws: ClientConnection) -> None:
        """Subscribe every unfinished watcher (new ones as they come, refused ones again)."""
        while True:
            for job_id, reader in list(self.readers.items()):
                if job_id in self.subscribed or reader.watcher.ended_at is not None:
                    continue
                self.subscribed.add(job_id)
                op: dict[str, Any] = {"op": "subscribe", "jobId": job_id}
                since = position(reader.watcher)
                if since is not None:
                    op["since"] = since
                await ws.send(json.dumps(op))
            self.changed.clear()
            await self.changed.wait()

    def retry(self, job_id: str) -> None:
        """The server refused a subscription (Redis away, say): ask again a little later."""
        self.subscribed.discard(job_id)
        asyncio.get_running_loop().call_later(0.2, self.changed.set)

    def receive(self, message: dict[str, Any]) -> None:
        reader = self.readers.get(message.get("jobId") or "")
        if reader is None or (reader.watcher.ended_at is not None and "seq" not in message):
            return
        kind = message.get("type")
        if kind == "error":
            reader.watcher.notes.append(f"error {message.get('code')}")
            if message.get("code") == "not_found":
                reader.finish("gone")
            else:
                self.retry(reader.watcher.job_id)
            return
        if kind in ("ack", "pong"):
            return
        seen = reader.take(message)
        if seen.terminal and reader.watcher.ended_at is None:
            reader.finish("terminal")

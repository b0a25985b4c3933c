"""Load test: N WebSocket (and SSE) subscribers on M jobs across several replicas; prints JSON.

    python bench/loadtest.py --url http://127.0.0.1:8080 --subscribers 1000 --jobs 20

``--protocol socketio`` / ``broadcaster`` drive the reference servers in ``bench/reference``
instead (same subscribers, same frames, same measurements): there the "jobs" are channels that
the servers start publishing (``--rate`` frames/s for ``--seconds``) once every subscriber
is in.

Job ``j`` is initiated through replica ``j % R`` (Delineate's shared queue then hands it to
any replica; the reference servers publish channel ``j`` from that replica). Its subscribers
are spread over all R replicas, so frames cross between replicas through Redis, as they do
for the product's users.

Each subscriber follows one job from seq 0 (``?since=0`` / ``Last-Event-ID: 0``), so it must
receive every frame of its job exactly once: frames missing from 1..<terminal seq> count as
lost, repeats as duplicates. Latency is receipt time minus the frame's ``ts`` (same machine),
for live frames only (frames emitted before the subscriber connected are replayed history).
``--follow live`` subscribes from where each job is instead (a snapshot, then the frames
after it, which must all arrive): the ramp then costs handshakes only, as it does on the
reference servers, whose channels start once every subscriber is in.
With ``--pid`` (repeatable) it also reports those server processes' CPU seconds and peak RSS.
Bounded: it stops after ``--max-seconds`` whatever happens. Loopback by default; it refuses
non-loopback URLs unless ``--allow-remote`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import os
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sseclient import open_sse
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from wsclient import open_ws


class JobHead(msgspec.Struct):
    status: str = ""


class Header(msgspec.Struct):
    type: str
    seq: int = -1
    ts: float = 0.0
    job: JobHead | None = None  # a snapshot's: an ended job's is its last frame


decode_header = msgspec.json.Decoder(Header).decode
TERMINAL = {"completed", "failed", "cancelled"}
SERVER_CLOSE_WAIT_S = 10.0


class Watcher:
    """What one subscriber saw."""

    __slots__ = (
        "connected_ms", "duplicates", "error", "final_seq",
        "job_id", "latencies", "received", "seen",
    )  # fmt: skip

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.connected_ms = float("inf")
        self.seen: set[int] = set()
        self.received = 0
        self.duplicates = 0
        self.final_seq: int | None = None
        self.latencies: list[tuple[float, float, str]] = []  # (frame ts, latency ms, type)
        self.error: str | None = None

    def frame(self, raw: str | bytes) -> bool:
        """Record one frame off the wire; True once the job's terminal frame arrived."""
        header = decode_header(raw)
        if header.seq < 0:
            return False  # control message
        ended = header.job is not None and header.job.status in TERMINAL
        return self.record(header.seq, header.ts, header.type, ended=ended)

    def record(self, seq: int, ts: float, kind: str, *, ended: bool = False) -> bool:
        """Record one frame; True once the job's terminal frame arrived (or, ``ended``, a
        snapshot of the ended job: what a live subscriber that came late gets)."""
        now = time.time() * 1000
        self.received += 1
        if seq in self.seen:
            self.duplicates += 1
        self.seen.add(seq)
        if ts >= self.connected_ms:
            # Only live frames: replayed history was sent before this subscriber connected.
            self.latencies.append((ts, now - ts, kind))
        if kind in TERMINAL or ended:
            self.final_seq = seq
            return True
        return False

    def dump(self) -> list[Any]:
        """What a worker process sends the coordinator (``load`` reads it back)."""
        connected = -1.0 if self.connected_ms == float("inf") else self.connected_ms
        return [self.job_id, connected, sorted(self.seen), self.received, self.duplicates,
                self.final_seq, self.latencies, self.error]  # fmt: skip

    @classmethod
    def load(cls, row: list[Any]) -> Watcher:
        watcher = cls(row[0])
        watcher.connected_ms = float("inf") if row[1] < 0 else row[1]
        watcher.seen = set(row[2])
        watcher.received, watcher.duplicates, watcher.final_seq = row[3], row[4], row[5]
        watcher.latencies = [tuple(sample) for sample in row[6]]  # type: ignore[misc]
        watcher.error = row[7]
        return watcher

    def lost(self, last_seq: int | None, *, live: bool = False) -> int:
        """Frames of 1..``last_seq`` (the job's terminal seq, as any subscriber saw it) that
        never arrived; a subscriber that never finished has lost everything it missed.
        ``live``: it followed from the job's position when it joined (its first frame, the
        snapshot), so only frames after that count."""
        return len(self.missing(last_seq, live=live))

    def missing(self, last_seq: int | None, *, live: bool = False) -> list[int]:
        if last_seq is None:
            return []
        first = min(self.seen) if live and self.seen else 1
        return sorted(set(range(first, last_seq + 1)) - self.seen)


Handler = Callable[[Any, bytes], None]
CLIENTS = ("raw", "websockets", "sdk")
"""Client kinds: the load test's minimal callback client (``wsclient``), the ``websockets``
library's asyncio client, and (Delineate only) the SDK's ``subscribe()``."""


class LibraryConnection:
    """The ``websockets`` library's asyncio client behind the minimal client's interface:
    every message through its ``recv()``, its close handshake, its pings. What the library
    costs the load client is part of what this kind measures (the report has the clients'
    CPU)."""

    __slots__ = ("_reader", "_sends", "close_code", "closed", "ws")

    def __init__(self, ws: ClientConnection, on_message: Handler) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read(on_message))
        self._sends: set[asyncio.Future[None]] = set()

    async def _read(self, on_message: Handler) -> None:
        try:
            while True:
                on_message(self, await self.ws.recv(decode=False))
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            if not self.closed.done():
                self.closed.set_result(self.close_code)

    def send_text(self, text: str) -> None:
        send = asyncio.ensure_future(self.ws.send(text))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def aclose(self) -> None:
        await self.ws.close()
        await self._reader


async def open_library_ws(url: str, on_message: Handler) -> LibraryConnection:
    ws = await ws_connect(url, compression=None, open_timeout=60, max_size=2**24)
    return LibraryConnection(ws, on_message)


HANDSHAKES_IN_FLIGHT = 256
"""Per client process: opening handshakes under way at once. Thousands of SYNs at once
overflow a replica's accept queue (uvicorn's backlog is 2048), and the kernel's SYN cookies
then reset some of them: that measures the kernel, and no user population arrives in the
same millisecond. A slot is held from connect to the handshake's answer."""
_handshakes: asyncio.Semaphore | None = None


def handshake_slot() -> asyncio.Semaphore:
    global _handshakes
    if _handshakes is None:
        _handshakes = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    return _handshakes


async def follow(
    connect: Callable[[Callable[[Any, bytes], None]], Awaitable[Any]],
    watcher: Watcher,
    make_handler: Callable[[asyncio.Future[None]], Handler] | None = None,
    *,
    server_closes: bool = False,
) -> None:
    """One subscriber: ``connect(on_message)`` opens a WebSocket or SSE connection whose
    messages go to ``watcher`` until its terminal frame. The default handler takes every
    message as a frame; ``make_handler`` speaks a protocol.

    ``server_closes``: the server ends the connection after the terminal frame (Delineate's
    single-job socket closes 1000, its event stream ends), and the client lets it, as RFC
    6455 (7.1.1) asks of a WebSocket client and as a browser page does: it waits up to
    SERVER_CLOSE_WAIT_S for that, then closes. Otherwise the client starts the closing
    handshake on the terminal frame (as the SDK does; the reference servers never close a
    channel's socket, so their clients always do)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_frame(conn: Any, raw: bytes) -> None:
        if watcher.frame(raw) and not done.done():
            done.set_result(None)

    try:
        async with handshake_slot():
            conn = await connect(make_handler(done) if make_handler else on_frame)
        if make_handler is None:
            watcher.connected_ms = time.time() * 1000
        await asyncio.wait([done, conn.closed], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            code = getattr(conn, "close_code", None)  # SSE has none
            watcher.error = f"closed {code or ''} before the terminal frame"
        elif server_closes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.closed), SERVER_CLOSE_WAIT_S)
        await conn.aclose()
    except Exception as exc:
        watcher.error = repr(exc)


def frame_type(frame: Any) -> str:
    tag = getattr(frame, "type", None)  # an UnknownFrame names its type
    return tag if isinstance(tag, str) else str(frame.__struct_config__.tag)


async def sdk_follow(client: Any, watcher: Watcher, *, server_closes: bool, live: bool) -> None:
    """One subscriber on the SDK's ``subscribe()``: ``server_closes`` iterates to the end (the
    SDK's own handling after the terminal frame), otherwise the consumer breaks out on the
    terminal frame and closes the iterator, as ``async with aclosing(...)`` code does."""
    frames = client.subscribe(watcher.job_id, since=None if live else 0, unknown=True)
    slot = handshake_slot()
    await slot.acquire()
    try:
        async for frame in frames:
            if watcher.connected_ms == float("inf"):
                # The SDK says nothing at the handshake: the first frame (replayed history
                # of a running job) marks the subscriber as in.
                watcher.connected_ms = time.time() * 1000
                slot.release()
            ts = getattr(frame, "ts", 0.0)
            status = getattr(getattr(frame, "job", None), "status", None)
            ended = getattr(status, "value", status) in TERMINAL
            if watcher.record(frame.seq, ts, frame_type(frame), ended=ended) and not server_closes:
                break
        if watcher.final_seq is None:
            watcher.error = "the subscription ended before the terminal frame"
    except Exception as exc:
        watcher.error = repr(exc)
    finally:
        if watcher.connected_ms == float("inf"):
            slot.release()
        await frames.aclose()


Subscriber = Callable[[str, Watcher], Awaitable[None]]


def ws_subscriber(kind: str, closing: str, sdk: Any = None, *, live: bool = False) -> Subscriber:
    """Delineate's single-job socket, followed by a client of ``kind`` from seq 0 (every
    frame, history replayed) or, ``live``, from where the job is (a snapshot, then live
    frames: what the reference servers' subscribers get)."""
    server_closes = closing == "server"
    since = "" if live else "?since=0"

    async def subscribe(url: str, watcher: Watcher) -> None:
        if kind == "sdk":
            await sdk_follow(sdk[url], watcher, server_closes=server_closes, live=live)
            return
        ws_url = f"{url}/v1/download/subscribe/{watcher.job_id}{since}"
        opener = open_library_ws if kind == "websockets" else open_ws
        await follow(lambda on_message: opener(ws_url, on_message), watcher,
                     server_closes=server_closes)  # fmt: skip

    return subscribe


async def sse_subscriber(url: str, watcher: Watcher, *, live: bool = False) -> None:
    url = f"{url}/v1/download/stream/{watcher.job_id}"
    headers = {} if live else {"Last-Event-ID": "0"}
    await follow(lambda on_event: open_sse(url, on_event, headers), watcher, server_closes=True)


def broadcaster_subscriber(
    kind: str, closing: str, sdk: Any = None, *, live: bool = False
) -> Subscriber:
    async def subscribe(url: str, watcher: Watcher) -> None:
        opener = open_library_ws if kind == "websockets" else open_ws
        ws_url = f"{url}/ws/{watcher.job_id}"
        await follow(lambda on_message: opener(ws_url, on_message), watcher)

    return subscribe


def socketio_subscriber(
    kind: str, closing: str, sdk: Any = None, *, live: bool = False
) -> Subscriber:
    """Engine.IO 4 over WebSocket: open, connect the default namespace, ``join`` the channel
    with an ack, answer pings, read ``frame`` events. (The reference servers' channels start
    once every subscriber is in: every frame is live whatever ``live`` says.)"""

    async def subscribe(url: str, watcher: Watcher) -> None:
        def handler(done: asyncio.Future[None]) -> Handler:
            def on_message(conn: Any, raw: bytes) -> None:
                if raw == b"2":
                    conn.send_text("3")
                elif raw.startswith(b"0{"):
                    conn.send_text("40")
                elif raw.startswith(b"40"):
                    conn.send_text(f'421["join","{watcher.job_id}"]')
                elif raw.startswith(b"431"):
                    watcher.connected_ms = time.time() * 1000  # in the room
                elif raw.startswith(b"42"):
                    event, data = json.loads(raw[2:])
                    if event == "frame" and watcher.frame(data) and not done.done():
                        done.set_result(None)

            return on_message

        opener = open_library_ws if kind == "websockets" else open_ws
        sio_url = f"{url}/socket.io/?EIO=4&transport=websocket"
        await follow(lambda on_message: opener(sio_url, on_message), watcher, handler)

    return subscribe


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def quantiles(values: list[float]) -> dict[str, float]:
    return {
        q: percentile(values, v)
        for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
    }


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds so far, peak RSS in KiB) of a local process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cpu, peak


def redis_info(port: int, section: str) -> dict[str, str]:
    """One ``INFO`` section of a local Redis node, as its ``name:value`` lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"INFO {section}\r\n".encode())
        with sock.makefile("rb") as reply:
            header = reply.readline()  # a bulk string: b"$<length>\r\n"
            if not header.startswith(b"$"):
                raise ConnectionError(f"Redis on port {port} answered INFO with {header!r}")
            body = reply.read(int(header[1:]))
    return dict(line.split(":", 1) for line in body.decode().splitlines() if ":" in line)


def redis_usage(port: int) -> tuple[float, dict[str, tuple[int, int]]]:
    """A local Redis node's CPU seconds so far and (calls, usec) of each command it ran, in
    one ``INFO cpu commandstats``. The CPU is getrusage's, in us: /proc counts 10 ms ticks,
    too coarse for the few ms a second an idle node spends. A command's usec is the time
    inside it, without reading, writing or the Cluster bus."""
    info = redis_info(port, "cpu commandstats")
    commands = {}
    for name, value in info.items():
        if name.startswith("cmdstat_"):
            fields = dict(field.split("=", 1) for field in value.split(","))
            commands[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), commands


def redis_ports(args: argparse.Namespace) -> list[tuple[str, int]]:
    """``--redis-port NAME=PORT`` pairs."""
    return [(name, int(port)) for name, port in (v.split("=", 1) for v in args.redis_port)]


def check_loopback(urls: list[str], allow_remote: bool) -> None:
    for url in urls:
        host = urlparse(url).hostname or ""
        loopback = host == "localhost" or (
            host.replace(".", "").isdigit() and ipaddress.ip_address(host).is_loopback
        )
        if not loopback and not allow_remote:
            raise SystemExit(f"refusing non-loopback target {url} (use --allow-remote)")


async def start_jobs(urls: list[str], count: int, files_per_job: int) -> list[str]:
    job_ids = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(count):
            ids = [70000 + 7 * ((i * files_per_job + k) % 40) for k in range(files_per_job)]
            response = await client.post(f"{urls[i % len(urls)]}/v1/download/initiate",
                                         json={"file_ids": ids})  # fmt: skip
            response.raise_for_status()
            job_ids.append(response.json()["jobId"])
    return job_ids


TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})
INITIATE_LOAD = Path(__file__).resolve().parent / "initiate_load.py"
STAGGER_S = 0.002
SETTLE_S = 2.0
WORKER_GRACE_S = 30.0
"""How long past ``--max-seconds`` the coordinator waits for a worker's report."""


async def staggered(task: Awaitable[None], delay: float) -> None:
    await asyncio.sleep(delay)
    await task


SUBSCRIBERS = {
    "delineate": ws_subscriber,
    "socketio": socketio_subscriber,
    "broadcaster": broadcaster_subscriber,
}


STRAGGLER_S = 15.0
"""How long a subscriber may wait for its job's terminal frame after another subscriber of
the same job in this process received it: the reference servers keep no history, so one
that missed it would otherwise wait out --max-seconds."""


async def cut_stragglers(watchers: list[Watcher], tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the subscribers still waiting STRAGGLER_S after their job's end was seen here,
    each recorded with an error (it counts as unfinished)."""
    ended_at: dict[str, float] = {}
    waiting = list(zip(watchers, tasks, strict=True))
    while waiting:
        await asyncio.sleep(0.5)
        now = time.monotonic()
        for watcher in watchers:
            if watcher.final_seq is not None:
                ended_at.setdefault(watcher.job_id, now)
        still = []
        for watcher, task in waiting:
            if task.done() or watcher.final_seq is not None or watcher.error is not None:
                continue
            if now - ended_at.get(watcher.job_id, now) >= STRAGGLER_S:
                watcher.error = f"no terminal frame {STRAGGLER_S:.0f} s after its job's end"
                task.cancel()
            else:
                still.append((watcher, task))
        waiting = still


async def all_in(watchers: list[Watcher]) -> None:
    """Wait until every subscriber is connected (or has failed)."""
    # Polled: thousands of subscribers would each need to poke a shared event.
    while any(w.connected_ms == float("inf") and w.error is None for w in watchers):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def start_publishing(urls: list[str], channels: list[str], args: argparse.Namespace) -> None:
    """Reference servers: each replica publishes its share of the channels."""
    async with httpx.AsyncClient(timeout=30) as client:
        for i, url in enumerate(urls):
            share = channels[i :: len(urls)]
            body = {"channels": share, "rate": args.rate, "seconds": args.seconds}
            (await client.post(f"{url}/publish", json=body)).raise_for_status()


async def start_initiate_load(urls: list[str], args: argparse.Namespace) -> Any:
    """``bench/initiate_load.py`` in its own process (this one is busy with the subscribers)."""
    argv = [str(INITIATE_LOAD),
            "--rate", str(args.initiate_rate), "--seconds", str(args.initiate_seconds)]  # fmt: skip
    for url in urls:
        argv += ["--url", url]
    return await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The coordinator: start the jobs, spread the subscribers over ``--processes`` worker
    processes, mark the steady window once every worker's subscribers are in, and merge what
    the workers saw. The workers report their own CPU, so the report shows whether the load
    client or the servers were the bottleneck."""
    urls = [u.rstrip("/") for u in args.url]
    before = {pid: process_usage(pid) for pid in args.pid}
    if args.protocol == "delineate":
        job_ids = await start_jobs(urls, args.jobs, args.files_per_job)
    else:
        job_ids = [f"bench-{i}" for i in range(args.jobs)]
    total = args.subscribers + args.sse
    started = time.monotonic()
    steady: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="delineate-loadtest-") as tmp:
        plan = Path(tmp) / "plan.json"
        plan.write_bytes(msgspec.json.encode({"job_ids": job_ids, "urls": urls}))
        share = -(-total // args.processes)
        workers = [
            await start_worker(args, plan, Path(tmp) / f"worker-{n}.json", first, share)
            for n, first in enumerate(range(0, total, share))
        ]
        initiate = None
        timed_out = False
        try:
            async with asyncio.timeout(args.max_seconds + WORKER_GRACE_S):
                for worker in workers:
                    await expect(worker, "in")
                steady["ramp_s"] = time.monotonic() - started
                sys.stderr.write(f"{steady['ramp_s']:5.1f}s  {total} subscribers in\n")
                if args.protocol != "delineate":
                    await asyncio.sleep(1)  # let the last subscriptions reach Redis
                    await start_publishing(urls, job_ids, args)
                # The steady state starts a moment after the last subscriber is in (servers
                # may still be sending the ramp's replays): latency, CPU and frames are
                # counted from here, for every server alike.
                await asyncio.sleep(SETTLE_S)
                steady["ms"] = time.time() * 1000
                steady["usage"] = {pid: process_usage(pid) for pid in args.pid}
                steady["redis_usage"] = {
                    name: redis_usage(port) for name, port in redis_ports(args)
                }
                steady["redis_since"] = time.monotonic()
                frames = 0
                for worker in workers:
                    worker.stdin.write(b"mark\n")  # type: ignore[union-attr]
                for worker in workers:
                    frames += int(await expect(worker, "mark"))
                steady["frames"] = frames
                if args.initiate_rate:
                    initiate = await start_initiate_load(urls, args)
                # Workers dump what they saw only once every one has ended: a dump is a
                # burst of CPU, which would delay the frames still due to another worker.
                for worker in workers:
                    await expect(worker, "ended")
                for worker in workers:
                    worker.stdin.write(b"dump\n")  # type: ignore[union-attr]
                for worker in workers:
                    await expect(worker, "done")
                if initiate is not None:
                    out, err = await initiate.communicate()
                    # A run that printed nothing says why, instead of reporting nulls.
                    steady["initiate"] = (
                        json.loads(out) if out.strip() else {"failed": err.decode()[-2000:]}
                    )
        except TimeoutError:
            timed_out = True
        for child in [*workers, initiate]:
            if child is not None and child.returncode is None:
                child.kill()  # our own children, by their handles
            if child is not None:
                await child.wait()
        reports = [
            msgspec.json.decode(path.read_bytes())
            for n in range(len(workers))
            if (path := Path(tmp) / f"worker-{n}.json").exists()
        ]
    elapsed = time.monotonic() - started
    watchers = [Watcher.load(row) for report in reports for row in report["watchers"]]
    timed_out = timed_out or len(reports) < len(workers) or any(r["timed_out"] for r in reports)
    result = summarize(args, watchers, elapsed, timed_out, before, steady)
    if "ramp_s" in steady:
        # From the start (jobs initiated) until every subscriber was in: with the servers'
        # CPU, what a crowd of handshakes (a replica's sockets reconnecting) costs.
        result["ramp"] = {
            "seconds": round(steady["ramp_s"], 3),
            "handshakes_per_second": round(total / steady["ramp_s"], 1),
        }
    result["client"] = {
        "kind": args.client,
        "closing": args.closing,
        "processes": len(workers),
        "cpu_seconds": [r["cpu_s"] for r in reports],
        "cpu_seconds_steady": [r["cpu_steady_s"] for r in reports],
    }
    frames = result["frames_delivered"] - steady.get("frames", 0)
    if frames > 0:
        steady_cpu = sum(r["cpu_steady_s"] for r in reports)
        result["client"]["cpu_us_per_frame"] = round(steady_cpu * 1e6 / frames, 1)
    return result


async def start_worker(
    args: argparse.Namespace, plan: Path, dump: Path, first: int, count: int
) -> asyncio.subprocess.Process:
    argv = [sys.executable, __file__, "--worker", str(plan), str(dump), str(first), str(count),
            *args.forwarded]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def expect(worker: asyncio.subprocess.Process, word: str) -> str:
    """The rest of the worker's next line, which must start with ``word``."""
    line = (await worker.stdout.readline()).decode()  # type: ignore[union-attr]
    if not line.startswith(word):
        raise SystemExit(f"a load-test worker said {line!r}, expected {word!r}")
    return line[len(word) :].strip()


async def work(args: argparse.Namespace, plan: Any, first: int, count: int) -> dict[str, Any]:
    """A worker process: subscribers ``first`` .. ``first + count - 1`` of the plan. Says
    ``in`` once they are connected, answers ``mark`` with the frames received so far, says
    ``ended`` when they have all ended, and on ``dump`` returns what its subscribers saw."""
    job_ids, urls = plan["job_ids"], plan["urls"]
    total = args.subscribers + args.sse
    indices = range(first, min(total, first + count))
    watchers = [Watcher(job_ids[i % len(job_ids)]) for i in indices]
    ws_urls = ["ws" + u.removeprefix("http") for u in urls]
    sdk = {}
    if args.client == "sdk":
        from delineate_client import AsyncClient

        sdk = {ws: AsyncClient(url, trust_env=False) for ws, url in zip(ws_urls, urls, strict=True)}
    live = args.follow == "live"
    subscriber = SUBSCRIBERS[args.protocol](args.client, args.closing, sdk, live=live)
    # Subscriber i follows job i % J on replica (i // J) % R: each job's subscribers are
    # spread over every replica, whichever one runs the job. (With i % R, all of a job's
    # subscribers sat on the replica it was initiated through.)
    tasks: list[Awaitable[None]] = []
    for i, watcher in zip(indices, watchers, strict=True):
        home = (i // len(job_ids)) % len(urls)
        if i < args.subscribers:
            tasks.append(subscriber(ws_urls[home], watcher))
        else:
            tasks.append(sse_subscriber(urls[home], watcher, live=live))
    if args.protocol == "broadcaster":
        # encode/broadcaster loses subscriptions when two arrive at once (its Redis backend
        # subscribes while its listener reads the same pub/sub connection): open them one
        # after another, as its users have to.
        tasks = [staggered(task, i * STAGGER_S) for i, task in zip(indices, tasks, strict=True)]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    running = [asyncio.ensure_future(task) for task in tasks]
    everyone = asyncio.gather(*running, return_exceptions=True)
    stragglers = asyncio.create_task(cut_stragglers(watchers, running))
    marked: asyncio.Future[float] = loop.create_future()

    async def answer_mark() -> None:
        if (await stdin.readline()).strip() == b"mark":
            say(f"mark {sum(w.received for w in watchers)}")
            marked.set_result(cpu_seconds())
        elif not marked.done():
            marked.set_result(cpu_seconds())  # the coordinator went away

    timed_out = False
    try:
        async with asyncio.timeout(args.max_seconds):
            await all_in(watchers)
            say("in")
            await answer_mark()
            for outcome in await everyone:
                if isinstance(outcome, Exception):
                    raise outcome  # a subscriber's own bug, not a cut straggler
    except TimeoutError:
        timed_out = True
        everyone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await everyone
    stragglers.cancel()
    at_mark = marked.result() if marked.done() else cpu_seconds()
    cpu_at_end = cpu_seconds()
    say("ended")
    if not timed_out:
        await stdin.readline()  # "dump" (or the coordinator went away)
    for client in sdk.values():
        await client.aclose()
    return {
        "timed_out": timed_out,
        "cpu_s": round(cpu_at_end, 3),
        "cpu_steady_s": round(cpu_at_end - at_mark, 3),
        "watchers": [w.dump() for w in watchers],
    }


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize(
    args: argparse.Namespace,
    watchers: list[Watcher],
    elapsed: float,
    timed_out: bool,
    before: dict[int, tuple[float, int]],
    steady_start: dict[str, Any],
) -> dict[str, Any]:
    # Steady state: frames emitted once every subscriber was connected (the ramp of thousands
    # of handshakes and history replays is reported separately).
    ramp_end = steady_start.get("ms") or max(
        (w.connected_ms for w in watchers if w.connected_ms != float("inf")), default=0
    )
    ramp: list[float] = []
    by_type: dict[str, list[float]] = {}  # steady state, per frame type
    for w in watchers:
        for ts, lat, kind in w.latencies:
            if ts >= ramp_end:
                by_type.setdefault(kind, []).append(lat)
            else:
                ramp.append(lat)
    steady = [lat for values in by_type.values() for lat in values]
    # The channels end within a second of each other, and then every subscriber's last frames
    # and its close come at once: the tail of the whole run is there. Also reported: the
    # steady window up to a second before the first terminal frame (frames while streaming).
    ends = [ts for w in watchers for ts, _, kind in w.latencies if kind in TERMINAL_TYPES]
    first_end = min(ends, default=float("inf"))
    streaming = [
        lat for w in watchers for ts, lat, _ in w.latencies if ramp_end <= ts < first_end - 1000
    ]
    if args.samples:
        # Every sample, for looking at when the tail happens: [frame ts ms, latency ms, type].
        samples = [sample for w in watchers for sample in w.latencies]
        Path(args.samples).write_bytes(msgspec.json.encode(samples))
    frames = sum(w.received for w in watchers)
    live = args.follow == "live"
    terminal: dict[str, int] = {}
    for w in watchers:
        if w.final_seq is not None:
            terminal[w.job_id] = max(terminal.get(w.job_id, 0), w.final_seq)
    result: dict[str, Any] = {
        "protocol": args.protocol,
        "subscribers": {"websocket": args.subscribers, "sse": args.sse},
        "follow": args.follow,
        "jobs": args.jobs,
        "seconds": round(elapsed, 3),
        "timed_out": timed_out,
        "frames_delivered": frames,
        "frames_per_second": round(frames / elapsed, 1) if elapsed else 0,
        "latency_ms": quantiles(steady),
        "latency_samples": len(steady),
        "latency_ms_during_ramp": quantiles(ramp),
        "latency_ms_while_streaming": {**quantiles(streaming), "frames": len(streaming)},
        # Where the tail comes from: steady-state latency per frame type, with its count.
        "latency_ms_by_type": {
            kind: {**quantiles(values), "frames": len(values)}
            for kind, values in sorted(by_type.items())
        },
        "lost_frames": sum(w.lost(terminal.get(w.job_id), live=live) for w in watchers),
        # Which frames, for finding out why: (job, missing seqs, finished?), a few.
        "lost_examples": [
            [w.job_id, missing, w.final_seq is not None]
            for w in watchers
            if (missing := w.missing(terminal.get(w.job_id), live=live))
        ][:5],
        "duplicate_frames": sum(w.duplicates for w in watchers),
        "unfinished_subscribers": sum(w.final_seq is None for w in watchers),
        "connection_errors": sum(w.error is not None for w in watchers),
        "error_examples": sorted({w.error for w in watchers if w.error})[:5],
    }
    if "initiate" in steady_start:
        result["initiate_under_load"] = steady_start["initiate"]
    if before:
        after = {pid: process_usage(pid) for pid in before}
        cpu = sum(after[p][0] - before[p][0] for p in before)
        result["server_cpu_seconds"] = round(cpu, 3)
        result["server_cpu_us_per_frame_overall"] = round(cpu * 1e6 / frames, 1) if frames else None
        if "usage" in steady_start:
            # Steady state only: what each delivered frame costs once everyone is connected
            # (handshakes and history replays excluded, for every server alike).
            start = steady_start["usage"]
            steady_cpu = sum(after[p][0] - start[p][0] for p in before)
            steady_frames = frames - steady_start["frames"]
            result["server_cpu_us_per_frame"] = (
                round(steady_cpu * 1e6 / steady_frames, 1) if steady_frames else None
            )
        result["server_peak_rss_kib"] = {str(p): after[p][1] for p in after}
    if steady_start.get("redis_usage"):
        # Each Redis node's CPU in the steady window, per frame delivered to a subscriber
        # (divide by subscribers per job for the cost per frame published).
        steady_frames = frames - steady_start["frames"]
        redis_before = steady_start["redis_usage"]
        redis_after = {name: redis_usage(port) for name, port in redis_ports(args)}
        result["redis_cpu_us_per_frame"] = {
            name: round((cpu - redis_before[name][0]) * 1e6 / steady_frames, 2)
            if steady_frames
            else None
            for name, (cpu, _) in redis_after.items()
        }
        if steady_frames:
            # Where it goes: each command's time and calls per frame, by role (a script's
            # time includes the commands it runs, which count under their own names too).
            roles: dict[str, dict[str, list[float]]] = {}
            for name, (_, now) in redis_after.items():
                commands = roles.setdefault(name.split("-", 1)[0], {})
                for command, (calls, usec) in now.items():
                    was_calls, was_usec = redis_before[name][1].get(command, (0, 0))
                    total = commands.setdefault(command, [0.0, 0.0])
                    total[0] += (usec - was_usec) / steady_frames
                    total[1] += (calls - was_calls) / steady_frames
            result["redis_commands_per_frame"] = {
                role: {
                    command: {"us": round(us, 3), "calls": round(calls, 4)}
                    for command, (us, calls) in sorted(commands.items(), key=lambda c: -c[1][0])
                    if calls
                }
                for role, commands in roles.items()
            }
        result["redis_steady"] = {
            "seconds": round(time.monotonic() - steady_start["redis_since"], 3),
            "frames": steady_frames,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    worker = argv[:1] == ["--worker"]
    if worker:
        _, plan, dump, first, count, *argv = argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", action="append", help="base URL (repeatable; default http://127.0.0.1:3000)"
    )
    parser.add_argument("--subscribers", type=int, default=100, help="WebSocket subscribers")
    parser.add_argument("--sse", type=int, default=0, help="SSE subscribers")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--files-per-job", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=120, help="hard stop")
    parser.add_argument("--pid", type=int, action="append", default=[], help="local server pid")
    parser.add_argument(
        "--redis-port", action="append", default=[], metavar="NAME=PORT",
        help="a local Redis node whose CPU per frame to report",
    )  # fmt: skip
    parser.add_argument("--allow-remote", action="store_true")
    parser.add_argument("--protocol", choices=sorted(SUBSCRIBERS), default="delineate")
    parser.add_argument(
        "--client", choices=CLIENTS, default="raw",
        help="WebSocket client: the minimal callback client, the websockets library, the SDK",
    )  # fmt: skip
    parser.add_argument(
        "--closing", choices=("server", "client"), default=None,
        help="after the terminal frame: let the server close (Delineate's default) or close",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=1,
        help="client processes the subscribers are spread over (each under its file limit)",
    )  # fmt: skip
    parser.add_argument(
        "--follow", choices=("history", "live"), default="history",
        help="Delineate's subscribers: from seq 0 (history replayed) or from the job's position",
    )  # fmt: skip
    parser.add_argument("--rate", type=float, default=2, help="reference servers: frames/s")
    parser.add_argument("--seconds", type=float, default=20, help="reference servers: duration")
    parser.add_argument(
        "--initiate-rate", type=float, default=0, help="initiate requests/s during steady state"
    )
    parser.add_argument("--initiate-seconds", type=float, default=10)
    parser.add_argument("--samples", help="write every latency sample to this JSON file")
    args = parser.parse_args(argv)
    args.url = args.url or ["http://127.0.0.1:3000"]
    args.forwarded = argv
    if args.closing is None:
        # The reference servers never close a channel's socket: their clients close.
        args.closing = "server" if args.protocol == "delineate" else "client"
    if args.client == "sdk" and args.protocol != "delineate":
        parser.error("--client sdk follows Delineate's jobs only")
    check_loopback(args.url, args.allow_remote)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # No cyclic collections while measuring: a full one walks every latency sample kept so
    # far (hundreds of thousands) and stalls this loop for 100 ms or more, which showed up as
    # a latency spike on every server alike. The run is bounded; its few cycles can wait.
    gc.disable()
    try:
        import uvloop
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    if worker:
        job_plan = msgspec.json.decode(Path(plan).read_bytes())
        report = runner(work(args, job_plan, int(first), int(count)))
        Path(dump).write_bytes(msgspec.json.encode(report))
        say("done")
        return 0
    result = runner(run(args))
    print(json.dumps(result, indent=2))
    return 0 if result["lost_frames"] == 0 and result["duplicate_frames"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The load-test script, run with small numbers: it must keep working and report honestly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import loadtest
from bench.run import ceiling_of
from tests.support.processes import Replica

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "loadtest.py"


@pytest.mark.parametrize(
    ("client", "closing", "processes", "follow"),
    [("raw", "server", 1, "history"), ("websockets", "client", 2, "history"),
     ("sdk", "server", 2, "history"), ("sdk", "client", 1, "live")],
)  # fmt: skip
def test_small_load_test_loses_nothing(
    server: Replica, client: str, closing: str, processes: int, follow: str
) -> None:
    """30 WebSocket + 10 SSE subscribers on 4 jobs, with each client kind, from several
    client processes, from seq 0 or live: all finish, none lost or repeated, and the
    clients' CPU is reported per process."""
    assert server.pid is not None
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", server.url, "--subscribers", "30", "--sse", "10",
         "--jobs", "4", "--max-seconds", "60", "--pid", str(server.pid), "--client", client,
         "--closing", closing, "--processes", str(processes), "--follow", follow],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["lost_frames"] == 0
    assert report["duplicate_frames"] == 0
    assert report["unfinished_subscribers"] == 0
    assert report["connection_errors"] == 0, report["error_examples"]
    assert report["frames_delivered"] > 40
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert report["server_cpu_seconds"] > 0
    assert report["server_peak_rss_kib"][str(server.pid)] > 0
    assert report["follow"] == follow
    assert report["ramp"]["seconds"] > 0
    assert report["ramp"]["handshakes_per_second"] == pytest.approx(
        40 / report["ramp"]["seconds"], rel=0.01
    )
    assert report["client"]["kind"] == client
    assert report["client"]["closing"] == closing
    assert len(report["client"]["cpu_seconds"]) == processes
    assert all(cpu > 0 for cpu in report["client"]["cpu_seconds"])


def test_a_live_subscriber_owes_only_the_frames_after_its_snapshot() -> None:
    """From seq 0 every frame of the job counts; followed live, the first frame (the
    snapshot at the job's position) is where the count starts."""
    watcher = loadtest.Watcher("job")
    for seq, kind in ((5, "snapshot"), (6, "progress"), (8, "progress"), (10, "completed")):
        watcher.record(seq, 0.0, kind)
    assert watcher.missing(10, live=True) == [7, 9]
    assert watcher.missing(10) == [1, 2, 3, 4, 7, 9]
    assert loadtest.Watcher("job").lost(10, live=True) == 10  # never got a frame: all of it


async def test_handshakes_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscribers queue for a handshake slot: no more than HANDSHAKES_IN_FLIGHT connects
    are under way at once, and every subscriber still gets in."""
    monkeypatch.setattr(loadtest, "HANDSHAKES_IN_FLIGHT", 3)
    monkeypatch.setattr(loadtest, "_handshakes", None)
    under_way = peak = 0

    class Opened:
        closed: asyncio.Future[int]

        async def aclose(self) -> None:
            pass

    async def connect(on_message: Any) -> Opened:
        nonlocal under_way, peak
        under_way += 1
        peak = max(peak, under_way)
        await asyncio.sleep(0.01)
        under_way -= 1
        conn = Opened()
        conn.closed = asyncio.get_running_loop().create_future()
        on_message(conn, b'{"type": "completed", "seq": 1, "ts": 0}')
        return conn

    watchers = [loadtest.Watcher(f"job-{i}") for i in range(10)]
    await asyncio.gather(*(loadtest.follow(connect, w) for w in watchers))
    assert peak == 3
    assert all(w.final_seq == 1 and w.error is None for w in watchers)


async def test_a_subscriber_that_missed_its_jobs_end_is_cut_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reference server keeps no history: a subscriber that missed the terminal frame
    would wait out --max-seconds. Once another subscriber of its job got that frame, it has
    STRAGGLER_S, then it is cancelled and counted unfinished; one whose job nobody saw end
    is left alone."""
    monkeypatch.setattr(loadtest, "STRAGGLER_S", 0.2)
    finished, straggler, other_job = (loadtest.Watcher(j) for j in ("a", "a", "b"))
    finished.record(3, 0.0, "completed")
    never = asyncio.get_running_loop().create_future()
    tasks = [asyncio.ensure_future(asyncio.sleep(0)), asyncio.ensure_future(asyncio.shield(never)),
             asyncio.ensure_future(asyncio.shield(never))]  # fmt: skip
    cut = asyncio.create_task(loadtest.cut_stragglers([finished, straggler, other_job], tasks))
    await asyncio.sleep(1.5)
    assert tasks[1].cancelled()
    assert straggler.error is not None
    assert "terminal frame" in straggler.error
    assert straggler.final_seq is None
    assert not tasks[2].done()
    assert other_job.error is None
    assert not cut.done()  # still watching the job nobody saw end
    cut.cancel()
    tasks[2].cancel()


def test_refuses_remote_targets() -> None:
    """Only loopback targets unless asked otherwise."""
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--url", "http://192.0.2.1:80"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "refusing non-loopback" in out.stderr


RUN = SCRIPT.parent / "run.py"


@pytest.mark.timeout(600)  # eleven short runs, each on fresh processes
def test_make_bench_compares_three_servers_with_tiny_numbers() -> None:
    """`make bench` end to end with tiny numbers: Delineate (over WebSocket and over SSE, on
    one Redis node and on a Cluster), python-socketio and broadcaster each deliver every frame
    once to every subscriber, initiate requests during the stream all succeed, and the table
    names every row. (Node socket.io runs in the ceiling test.)"""
    out = subprocess.run(
        [sys.executable, str(RUN), "--scenario", "fanout,sse,initiate,scale,cluster",
         "--servers", "delineate,socketio,broadcaster", "--subscribers", "20", "--jobs", "2",
         "--seconds", "4", "--scale-sockets", "50", "--idle-per-server", "10",
         "--initiate-rate", "20", "--messages", "30", "--redis-idle-seconds", "1"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert set(report["fanout"]) == {"delineate", "delineate-sse", "socketio", "broadcaster"}
    assert report["fanout"]["delineate-sse"]["subscribers"] == {"websocket": 0, "sse": 20}
    for server, result in report["fanout"].items():
        if server.startswith("delineate"):
            # Ours is held to every frame once. The references keep no history: a subscriber
            # that joins late on a busy box misses frames there, which the report measures.
            assert result["lost_frames"] == 0, server
            assert result["duplicate_frames"] == 0, server
            assert result["unfinished_subscribers"] == 0, server
        assert result["frames_delivered"] >= 20 * 2, server
        assert result["server_cpu_us_per_frame"] is not None, server
    for server in ("delineate", "socketio", "broadcaster"):
        assert report["idle_per_server"][server]["still_open"] == 10
    initiate = report["initiate"]["initiate_under_load"]
    assert initiate["requests"] == 20  # 20/s over the 1 s window that 4 s jobs leave
    assert initiate["errors"] == 0, initiate["error_examples"]
    assert 0 < initiate["latency_ms"]["p50"] <= initiate["latency_ms"]["max"]
    assert report["initiate"]["lost_frames"] == 0
    scale = report["scale"]
    assert (scale["replicas"], scale["idle_sockets"], scale["still_open"]) == (4, 30, 30)
    assert scale["streaming"]["lost_frames"] == 0
    assert scale["streaming"]["unfinished_subscribers"] == 0
    assert len(scale["event_loop_lag_max_ms"]) == 4
    assert all(lag > 0 for lag in scale["event_loop_lag_max_ms"].values())
    # A stall is a lag less the wait for a CPU: read from the same replicas, never above it.
    stalls = scale["event_loop_stall_max_ms"]
    assert stalls.keys() == scale["event_loop_lag_max_ms"].keys()
    assert all(0 < stalls[n] <= scale["event_loop_lag_max_ms"][n] for n in stalls), stalls
    for server in ("delineate", "delineate-sse", "socketio", "broadcaster"):
        assert f"| {server} |" in out.stderr
    assert "initiate under load: " in out.stderr
    check_redis_modes(report, out.stderr)


@pytest.mark.timeout(300)
def test_make_bench_runs_every_client_kind_with_tiny_numbers() -> None:
    """The client-kinds scenario: Delineate followed by the minimal client, the websockets
    library and the SDK, each letting the server close and closing itself, from two client
    processes; broadcaster by the websockets library. Every frame once, every run in the
    table with the clients' CPU."""
    out = subprocess.run(
        [sys.executable, str(RUN), "--scenario", "clients", "--servers", "delineate,broadcaster",
         "--subscribers", "12", "--jobs", "2", "--seconds", "2", "--client-processes", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    runs = json.loads(out.stdout)["clients"]
    assert set(runs) == {
        "delineate raw client", "delineate websockets server", "delineate websockets client",
        "delineate sdk server", "delineate sdk client", "broadcaster websockets client",
    }  # fmt: skip
    for name, result in runs.items():
        assert result["duplicate_frames"] == 0, name
        assert result["client"]["processes"] == 2, name
        assert all(cpu > 0 for cpu in result["client"]["cpu_seconds"]), name
        if name.startswith("delineate"):
            assert result["lost_frames"] == 0, name
            assert result["unfinished_subscribers"] == 0, name
        kind, client, closing = name.split()
        row = f"| {kind} | {client} | {'server' if closing == 'server' else 'client'} closes |"
        assert row in out.stderr, name


@pytest.mark.timeout(300)
def test_make_bench_finds_each_servers_ceiling_with_tiny_numbers() -> None:
    """The ceiling scenario steps one replica's load (here 10, then 20 subscribers) for
    Delineate and for Node socket.io with its Redis adapter: every step delivers every frame
    once and reports who spent the CPU, and a server whose steps all held is at the steps' end."""
    out = subprocess.run(
        [sys.executable, str(RUN), "--scenario", "ceiling", "--servers", "delineate,socketio-node",
         "--ceiling-steps", "10,20", "--ceiling-seconds", "4", "--jobs", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    ceilings = json.loads(out.stdout)["ceiling"]
    assert set(ceilings) == {"delineate", "socketio-node"}
    for kind, run in ceilings.items():
        steps = run["steps"]
        assert [step["subscribers"] for step in steps] == [10, 20][: len(steps)], kind
        assert steps[0]["frames_per_second"] == 10 * 2, kind
        for step in steps:
            assert step["lost_frames"] == 0, (kind, step)
            assert step["unfinished_subscribers"] == 0, (kind, step)
            # Measured (a few ms of a Node process can round to 0 clock ticks).
            assert step["server_cores"] is not None, (kind, step)
            assert step["server_cores"] >= 0, (kind, step)
            assert step["client_cores"] > 0, (kind, step)
            assert step["handshakes_per_second"] > 0, (kind, step)
        assert run == ceiling_of(steps), kind  # the summary is the steps' own
        assert f"ceiling {kind}: " in out.stderr


def test_the_ceiling_is_the_last_step_that_held() -> None:
    """Steps stop at the first whose p99 passes the bound or that lost a frame; the ceiling
    is the step before, per replica and per core it used."""

    def step(subscribers: int, p99: float | None, lost: int = 0) -> dict[str, Any]:
        return {"subscribers": subscribers, "frames_per_second": subscribers * 2,
                "p99_streaming_ms": p99, "lost_frames": lost, "unfinished_subscribers": 0,
                "server_cores": 0.5}  # fmt: skip

    slow = ceiling_of([step(500, 8.0), step(1000, 20.0), step(2000, 51.0)])
    assert slow["ceiling_frames_per_second"] == 2000
    assert slow["ceiling_frames_per_second_per_core"] == 4000
    assert slow["limited_by"] == "p99 or loss"
    lossy = ceiling_of([step(500, 8.0), step(1000, 9.0, lost=1)])
    assert lossy["ceiling_frames_per_second"] == 1000
    never = ceiling_of([step(500, None)])
    assert never["ceiling_frames_per_second"] == 0
    assert never["ceiling_frames_per_second_per_core"] is None
    assert ceiling_of([step(500, 8.0), step(1000, 50.0)])["limited_by"] == "the steps' end"


def check_redis_modes(report: dict[str, Any], table: str) -> None:
    """The Cluster scenario: the same fan-out on one Redis primary + replica and on 3 primaries
    + 3 replicas, every frame once, each Redis node's CPU per frame reported by role."""
    modes = report["redis_modes"]
    assert set(modes) == {"replicated", "cluster"}
    for mode, result in modes.items():
        assert result["lost_frames"] == result["duplicate_frames"] == 0, mode
        assert result["unfinished_subscribers"] == 0, mode
        roles = sorted(name.split("-")[0] for name in result["redis_cpu_us_per_frame"])
        assert roles == (
            ["primary", "replica"] if mode == "replicated" else ["primary"] * 3 + ["replica"] * 3
        )
        assert all(v is not None and v >= 0 for v in result["redis_cpu_us_per_frame"].values())
        marginal = result["redis_cpu_us_per_frame_marginal"]
        assert marginal.keys() == result["redis_cpu_us_per_frame"].keys()
        assert all(0 <= marginal[k] <= v for k, v in result["redis_cpu_us_per_frame"].items())
        # Where the time goes: the per-frame script on the primaries, inside it the mode's
        # publish, and on the replicas what the primaries' scripts wrote.
        commands = result["redis_commands_per_frame"]
        primaries, replicas = commands["primary"], commands["replica"]
        publish = "publish" if mode == "replicated" else "spublish"
        assert primaries["evalsha"]["calls"] > 0, commands
        assert primaries[publish]["calls"] > 0, commands
        assert ("spublish" if mode == "replicated" else "publish") not in primaries
        assert "evalsha" not in replicas, commands
        assert replicas["xadd"]["calls"] > 0, commands
        assert f"redis {mode}: " in table
    assert report["pubsub_reader"]["readers"]["broker reader"]["messages"] == 30


def test_pubsub_reader_bench_with_tiny_numbers() -> None:
    """bench/pubsub_reader.py: both readers receive every message and report a CPU cost."""
    out = subprocess.run(
        [sys.executable, str(RUN.parent / "pubsub_reader.py"), "--messages", "30",
         "--gap-ms", "0.5"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    readers = json.loads(out.stdout)["readers"]
    assert set(readers) == {"redis-py get_message", "broker reader"}
    for result in readers.values():
        assert result["messages"] == 30
        assert result["cpu_us_per_message"] > 0

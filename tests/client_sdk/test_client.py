"""The Python SDK against real server processes (and real nginx for the fallbacks)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest

from delineate.storage import demo
from delineate_client import (
    AsyncClient,
    Backoff,
    JobFailed,
    JobNotFound,
    Timeout,
    Unauthorized,
    is_terminal,
)
from delineate_client.subscription import Subscription
from delineate_protocol.frames import CompletedFrame, JobStatus, SnapshotFrame
from tests.conftest import EdgeFactory, ReplicaFactory
from tests.support.clients import AVAILABLE, UNAVAILABLE
from tests.support.processes import Replica

pytestmark = pytest.mark.integration
FAST = Backoff(base=0.05, cap=0.5)


async def test_subscribe_to_completion_and_download(server: Replica, tmp_path: Path) -> None:
    """Typed frames in seq order end with `completed`; the bundle downloads intact."""
    async with AsyncClient(server.url, backoff=FAST) as client:
        job = await client.initiate(AVAILABLE)
        frames = [f async for f in client.subscribe(job.job_id)]
        path = await client.download(job.job_id, tmp_path / "bundle.zip")
        result = await client.result(job.job_id)
    assert isinstance(frames[0], SnapshotFrame)
    assert isinstance(frames[-1], CompletedFrame)
    assert [f.seq for f in frames] == sorted({f.seq for f in frames})
    assert is_terminal(frames[-1])
    assert path.stat().st_size == result.size
    archive = zipfile.ZipFile(path)
    assert {n: archive.read(n) for n in archive.namelist()} == {
        f"{i}.zip": demo.content(i) for i in AVAILABLE
    }


async def test_subscribe_many_over_one_socket(server: Replica) -> None:
    """Three jobs over the multiplexed socket, each to its end, each frame once."""
    async with AsyncClient(server.url, backoff=FAST) as client:
        jobs = [await client.initiate([i]) for i in AVAILABLE]
        frames = [f async for f in client.subscribe_many([j.job_id for j in jobs])]
    for job in jobs:
        own = [f for f in frames if f.job_id == job.job_id]
        assert is_terminal(own[-1])
        assert len({f.seq for f in own}) == len(own)


async def test_failed_job_raises_when_asked(server: Replica) -> None:
    """raise_on_failure turns a failed job into JobFailed with its code."""
    async with AsyncClient(server.url, backoff=FAST) as client:
        job = await client.initiate([UNAVAILABLE])
        with pytest.raises(JobFailed) as info:
            async for _ in client.subscribe(job.job_id, raise_on_failure=True):
                pass
    assert info.value.error_code == "no_files_available"


async def test_cancel_wait_timeout_and_unknown_jobs(replica_factory: ReplicaFactory) -> None:
    """wait() times out with Timeout; cancel() ends the job; unknown jobs are JobNotFound."""
    replica = replica_factory(DOWNLOAD_DELAY_MIN_MS="20000", DOWNLOAD_DELAY_MAX_MS="20000")
    async with AsyncClient(replica.url, backoff=FAST) as client:
        job = await client.initiate(AVAILABLE)
        with pytest.raises(Timeout):
            await client.wait(job.job_id, timeout=0.5)
        cancelled = await client.cancel(job.job_id)
        final = await client.wait(job.job_id, timeout=10)
        unknown = str(uuid.uuid4())
        with pytest.raises(JobNotFound):
            await client.status(unknown)
        with pytest.raises(JobNotFound):
            async for _ in client.subscribe(unknown):
                pass
    assert cancelled.status is JobStatus.CANCELLED
    assert final.status is JobStatus.CANCELLED


async def _follow(url: str, job_id: str) -> tuple[str, list[object]]:
    async with AsyncClient(url, backoff=FAST, poll_interval=0.2) as client:
        sub = Subscription(client, job_id, None, False)
        frames = [f async for f in sub.frames()]
    return sub.transport, frames


async def test_falls_back_to_sse_when_websocket_is_blocked(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory
) -> None:
    """Behind a proxy that does not pass upgrades, the SDK follows the job over SSE."""
    proxy = edge_factory([replica_factory()], websocket=False)
    async with AsyncClient(proxy.url) as client:
        job = await client.initiate(AVAILABLE)
    transport, frames = await _follow(proxy.url, job.job_id)
    assert transport == "sse"
    assert isinstance(frames[-1], CompletedFrame)


async def test_falls_back_to_polling_when_both_are_blocked(
    replica_factory: ReplicaFactory, edge_factory: EdgeFactory
) -> None:
    """With WebSocket and SSE both blocked, the SDK polls status until the job ends."""
    proxy = edge_factory([replica_factory()], websocket=False, sse=False)
    async with AsyncClient(proxy.url) as client:
        job = await client.initiate(AVAILABLE)
    transport, frames = await _follow(proxy.url, job.job_id)
    assert transport == "polling"
    assert all(isinstance(f, SnapshotFrame) for f in frames)
    last = frames[-1]
    assert isinstance(last, SnapshotFrame)
    assert last.job.status is JobStatus.COMPLETED


def test_sync_client_in_a_plain_script(server: Replica, tmp_path: Path) -> None:
    """The sync Client works from a script with no event loop of its own."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(f"""
        from delineate_client import Client
        with Client({server.url!r}) as client:
            job = client.initiate([70000])
            kinds = [type(f).__name__ for f in client.subscribe(job.job_id)]
            print(kinds[0], kinds[-1], client.status(job.job_id).status.value)
        """)
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["SnapshotFrame", "CompletedFrame", "completed"]


def test_cli_watch_prints_plain_lines_when_not_a_tty(replica_factory: ReplicaFactory) -> None:
    """`delineate-client watch` prints one line per frame when piped, and exits 0 on success."""
    # jobs long enough for the CLI to start and join while the job still runs
    server = replica_factory(DOWNLOAD_DELAY_MIN_MS="4000", DOWNLOAD_DELAY_MAX_MS="4000")
    env = {**os.environ, "DELINEATE_URL": server.url}
    cli = [sys.executable, "-m", "delineate_client.cli"]
    job_id = subprocess.run(
        [*cli, "initiate", "70000", "70007"], env=env, capture_output=True, text=True,
        timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    watch = subprocess.run(
        [*cli, "watch", job_id], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    lines = watch.stdout.splitlines()
    assert watch.returncode == 0, watch.stderr
    assert lines[0].startswith(f"job {job_id}: ")
    assert any(line.startswith("progress ") and "ETA" in line for line in lines)
    assert any(line.startswith("file 70000: done") for line in lines)
    assert any(line.startswith("completed: ") for line in lines)
    # the final screen: the final state (not the first snapshot's), and a link to paste
    assert lines[-2] == f"job {job_id}: completed, 100.0%"
    assert lines[-1].startswith("download: http://127.0.0.1:")  # absolute (local or S3)
    assert "\r" not in watch.stdout  # no bar redraws in a pipe
    status = subprocess.run(
        [*cli, "status", job_id], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert '"status":"completed"' in status.stdout


def test_progress_view_draws_a_bar_on_a_tty() -> None:
    """On a terminal the bar redraws in place with percent, bytes, rate and ETA."""
    from delineate_client.cli import ProgressView
    from delineate_protocol.frames import ProgressFrame

    out = io.StringIO()
    view = ProgressView(out, tty=True)
    for done in (0, 500_000, 1_000_000):
        view.show(ProgressFrame(job_id="j", seq=1, progress=done / 20_000, bytes_done=done,
                                bytes_total=2_000_000, files_done=0, files_total=1))  # fmt: skip
    text = out.getvalue()
    assert text.count("\r[") == 3
    assert "[" + "#" * 15 + "-" * 15 + "]  50.0%" in text
    assert "ETA" in text


async def test_a_token_authenticates_every_transport_and_a_wrong_one_fails_fast(
    replica_factory: ReplicaFactory,
) -> None:
    """With auth on, the token (an API key or a JWT) goes on HTTP, WebSocket and SSE; a wrong
    one raises Unauthorized at once instead of retrying or falling back."""
    replica = replica_factory(API_KEYS="sdk:sdk-key")
    for transports in (("websocket",), ("sse",)):
        async with AsyncClient(replica.url, "sdk-key", transports=transports) as client:
            job = await client.initiate([UNAVAILABLE])
            frames = [f async for f in client.subscribe(job.job_id)]
            assert is_terminal(frames[-1]), transports
    async with AsyncClient(replica.url, "sdk-key") as client:
        job = await client.initiate([UNAVAILABLE])
        many = [f async for f in client.subscribe_many([job.job_id])]
        assert is_terminal(many[-1])
    async with AsyncClient(replica.url, "wrong-key", backoff=Backoff(base=0.01)) as wrong:
        with pytest.raises(Unauthorized):
            await wrong.initiate(AVAILABLE)
        for transports in (("websocket",), ("sse",)):
            wrong.transports = transports
            with pytest.raises(Unauthorized):
                async for _ in wrong.subscribe(job.job_id):
                    pass

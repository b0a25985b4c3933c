"""Tokens that refresh, connection states, retries of idempotent calls, and the sync Client
inside a running event loop: the SDK against real replicas with auth on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jwt
import pytest

from delineate_client import (
    AsyncClient,
    Backoff,
    ConnectionFailed,
    ConnectionState,
    StateChange,
    TokenSource,
    Unauthorized,
)
from delineate_protocol.frames import AnyFrame, CompletedFrame, JobStatus, SnapshotFrame
from tests.conftest import ReplicaFactory
from tests.support.clients import AVAILABLE
from tests.support.processes import Replica
from tests.support.proxy import ReplyGate

pytestmark = pytest.mark.integration
SECRET = "sdk-test-secret-of-at-least-32-bytes"
LIFETIME_S = 2
FAST = Backoff(base=0.05, cap=0.3)


def short_lived() -> str:
    """A JWT that expires LIFETIME_S seconds from now."""
    return jwt.encode({"sub": "sdk", "exp": time.time() + LIFETIME_S}, SECRET, algorithm="HS256")


def completed(frame: AnyFrame) -> bool:
    """The job's end, as a completed frame or (polling) a snapshot of the completed job."""
    if isinstance(frame, SnapshotFrame):
        return frame.job.status is JobStatus.COMPLETED
    return isinstance(frame, CompletedFrame)


async def follow(
    url: str, job_id: str, token: TokenSource, transport: str, gate: ReplyGate
) -> list[AnyFrame]:
    """Follow the job over one transport; cut the connection once the token has expired."""
    async with AsyncClient(url, token, transports=(transport,), backoff=FAST,
                           poll_interval=0.3) as client:  # fmt: skip
        frames: list[AnyFrame] = []
        cutter = asyncio.get_running_loop().call_later(LIFETIME_S + 1.5, gate.cut)
        try:
            async for frame in client.subscribe(job_id):
                frames.append(frame)
        finally:
            cutter.cancel()
        return frames


async def test_a_job_longer_than_the_token_is_followed_to_its_end(
    replica_factory: ReplicaFactory,
) -> None:
    """With JWTs that expire after 2 s and a 6 s job, a token callable is asked again on each
    reconnect (and after the 401 polling gets) and every transport follows the job to its end;
    a fixed token of the same lifetime is refused at the reconnect."""
    replica = replica_factory(JWT_SECRET=SECRET, DOWNLOAD_DELAY_MIN_MS="6000",
                              DOWNLOAD_DELAY_MAX_MS="6000")  # fmt: skip
    calls = 0

    async def fresh() -> str:
        nonlocal calls
        calls += 1
        return short_lived()

    async with ReplyGate(replica.port) as gate:
        url = f"http://127.0.0.1:{gate.port}"
        async with AsyncClient(url, fresh) as starter:
            jobs = [(await starter.initiate(AVAILABLE)).job_id for _ in range(4)]
        transports = ("websocket", "sse", "polling")
        results = await asyncio.gather(
            *(follow(url, job, fresh, t, gate) for job, t in zip(jobs, transports, strict=False)),
            follow(url, jobs[3], short_lived(), "websocket", gate),
            return_exceptions=True,
        )
    for transport, frames in zip(transports, results, strict=False):
        assert isinstance(frames, list), (transport, frames)
        assert completed(frames[-1]), transport
    assert isinstance(results[3], Unauthorized)
    assert calls >= 7  # initiate; a first connection each; reconnects or 401s after expiry


async def test_connection_states_are_reported(server: Replica) -> None:
    """on_state sees connecting, connected, reconnecting (with its delay) after a cut, and
    closed at the end."""
    changes: list[StateChange] = []
    async with ReplyGate(server.port) as gate:
        url = f"http://127.0.0.1:{gate.port}"
        async with AsyncClient(url, backoff=FAST, on_state=changes.append) as client:
            job = await client.initiate(AVAILABLE)
            async for frame in client.subscribe(job.job_id):
                if isinstance(frame, SnapshotFrame) and not any(
                    c.state is ConnectionState.RECONNECTING for c in changes
                ):
                    gate.cut()
    states = [c.state for c in changes]
    assert states[:2] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    lost = states.index(ConnectionState.RECONNECTING)
    assert changes[lost].delay is not None
    assert states[lost + 1 : lost + 3] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    assert states[-1] is ConnectionState.CLOSED
    assert {c.transport for c in changes} == {"websocket"}


async def test_a_websocket_cut_mid_handshake_is_retried_not_given_up(server: Replica) -> None:
    """A connection closed before the upgrade's answer is a lost network, as the websockets
    library itself classes it: the SDK reconnects on the same transport (no fallback) and
    follows the job to its end."""
    changes: list[StateChange] = []
    async with ReplyGate(server.port) as gate:
        url = f"http://127.0.0.1:{gate.port}"
        async with AsyncClient(url, transports=("websocket",), backoff=FAST,
                               on_state=changes.append) as client:  # fmt: skip
            job = await client.initiate(AVAILABLE)
            gate.drop_next(2)
            frames = [frame async for frame in client.subscribe(job.job_id)]
    assert completed(frames[-1])
    states = [c.state for c in changes]
    assert states.count(ConnectionState.RECONNECTING) >= 2
    assert ConnectionState.FALLBACK not in states


async def test_idempotent_calls_are_retried_and_initiate_only_with_a_key(server: Replica) -> None:
    """status and result ride out dropped connections; initiate without an idempotency key
    is never retried (ConnectionFailed), with one it is."""
    async with ReplyGate(server.port) as gate:
        url = f"http://127.0.0.1:{gate.port}"
        async with AsyncClient(url, backoff=FAST, retries=3) as client:
            gate.drop_next(2)
            with pytest.raises(ConnectionFailed):
                await client.initiate(AVAILABLE)
            gate.drop_next(2)
            job = await client.initiate(AVAILABLE, idempotency_key=f"retry-{time.time_ns()}")
            gate.drop_next(2)
            status = await client.status(job.job_id)
            await client.wait(job.job_id, timeout=60)
            gate.drop_next(2)
            result = await client.result(job.job_id)
    assert status.job_id == job.job_id
    assert result.job_id == job.job_id


def test_the_sync_client_works_inside_a_running_event_loop(server: Replica, tmp_path: Path) -> None:
    """Client called from a coroutine (as in a notebook cell) follows a job to its end."""
    script = tmp_path / "notebook.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio
        from delineate_client import Client

        async def cell():
            with Client({server.url!r}) as client:
                job = client.initiate([70000])
                kinds = [type(f).__name__ for f in client.subscribe(job.job_id)]
                print(kinds[-1], client.status(job.job_id).status.value)

        asyncio.run(cell())
    """)
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CompletedFrame", "completed"]

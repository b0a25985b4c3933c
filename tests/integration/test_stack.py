"""`delineate stack`: the whole production-like deployment on loopback, started and stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from delineate_client import Client
from tests.support.processes import free_port, require_binary

pytestmark = pytest.mark.integration


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_stack_serves_through_nginx_and_stops_cleanly(tmp_path: Path) -> None:
    """The stack prints its URLs, serves a job through nginx, and Ctrl-C leaves no process."""
    for tool in ("redis-server", "weed", "nginx"):
        require_binary(tool)
    port = free_port()
    argv = [sys.executable, "-m", "delineate", "stack", "--replicas", "2", "--port", str(port),
            "--seed", "3", "--dir", str(tmp_path / "stack")]  # fmt: skip
    env = {**os.environ, "DOWNLOAD_DELAY_MIN_MS": "500", "DOWNLOAD_DELAY_MAX_MS": "800"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    try:
        banner = _read_banner(proc)
        assert f"http://127.0.0.1:{port}" in banner
        assert banner.count("replica-") == 2
        started = children(proc.pid)
        assert len(started) == 5  # redis, SeaweedFS, 2 replicas, nginx
        with Client(f"http://127.0.0.1:{port}") as client:
            job = client.initiate([70000, 70007])
            final = client.wait(job.job_id, timeout=60)
        assert final.status.value == "completed"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
    assert [pid for pid in started if alive(pid)] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def _read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail("the stack exited early:\n" + "".join(lines))
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return "".join(lines)
    pytest.fail("the stack did not start in time:\n" + "".join(lines))

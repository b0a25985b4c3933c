"""Starting and stopping the real processes integration tests need, on loopback ports.

Every process is started here and stopped by its own pid; nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def require_binary(name: str) -> str:
    """The path of ``name``; a missing tool FAILS the test (`make test` installs them all)."""
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make test` installs everything the tests need")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file, stopped by pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 10) -> None:
        if not self.alive:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)


def wait_until(predicate: object, timeout: float, what: str, proc: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive:
            pytest.fail(f"{proc.name} exited while waiting for {what}:\n{proc.log()}")
        with contextlib.suppress(Exception):
            if predicate():  # type: ignore[operator]
                return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{proc.log()}" if proc else ""))


TEST_ENV = {
    "HOST": "127.0.0.1",
    "DOWNLOAD_DELAY_ENABLED": "true",
    "DOWNLOAD_DELAY_MIN_MS": "800",
    "DOWNLOAD_DELAY_MAX_MS": "1200",
    "PROGRESS_INTERVAL_MS": "50",
    "RATE_LIMIT_MAX_REQUESTS": "1000000",
    "URL_SIGNING_SECRET": "test-secret",
    "LOG_FORMAT": "text",
}


class Replica(Process):
    """One real uvicorn server process (``python -m server serve``)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        full_env = {**os.environ, **TEST_ENV, "PORT": str(self.port), **env}
        argv = [sys.executable, "-m", "server", "serve"]
        super().__init__(name, argv, full_env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: httpx.get(f"{self.url}/health", timeout=1).status_code in (200, 503),
            20,
            f"{self.name} to answer /health",
            self,
        )

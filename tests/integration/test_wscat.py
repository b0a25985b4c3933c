"""wscat, the real npm tool, against a live server: the README's debugging session works."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Replica

pytestmark = pytest.mark.integration

WSCAT = Path(__file__).resolve().parents[2] / ".cache" / "npm" / "node_modules" / ".bin" / "wscat"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def wscat() -> str:
    if not WSCAT.exists():
        pytest.fail("wscat is not installed; `make test` installs it into .cache/npm")
    return str(WSCAT)


def frames_in(text: str) -> list[dict[str, object]]:
    """The JSON messages wscat printed (as `< {...}` on a terminal, bare when piped)."""
    found = []
    for line in ANSI.sub("", text).replace("\r", "\n").splitlines():
        line = line.strip().removeprefix("> ").removeprefix("< ").strip()
        if line.startswith("{") and '"type"' in line:
            found.append(json.loads(line))
    return found


def start_job(server: Replica, file_ids: list[int]) -> str:
    response = httpx.post(f"{server.url}/v1/download/initiate", json={"file_ids": file_ids})
    job_id: str = response.json()["jobId"]
    return job_id


def test_wscat_follows_one_job_until_the_server_closes(server: Replica) -> None:
    """`wscat -c ws://HOST/v1/download/subscribe/JOB` prints every frame, then exits at close."""
    job_id = start_job(server, [70000])
    # stdin stays open (as in a terminal): wscat must exit because the server closed.
    proc = subprocess.Popen(
        [wscat(), "-c", f"{server.ws_url}/v1/download/subscribe/{job_id}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        stdout = _read_all(proc)  # until wscat exits; pytest-timeout bounds it
    finally:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(10)
    frames = frames_in(stdout)
    assert frames[0]["type"] == "snapshot"
    assert frames[-1]["type"] == "completed"


class Terminal:
    """wscat on a pseudo-terminal, typed into like a person would."""

    def __init__(self, argv: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execv(argv[0], argv)
        self.output = b""

    def read_until(self, predicate: object, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate(self.text):  # type: ignore[operator]
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:
                    break
        return self.text

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def close(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def _read_all(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.read()


def test_wscat_drives_the_multiplexed_socket_by_hand(server: Replica) -> None:
    """Typing the subscribe op into wscat gets an ack and the job's frames; a typo gets an error."""
    job = {"jobId": start_job(server, [70007])}
    term = Terminal([wscat(), "-c", f"{server.ws_url}/v1/ws"])
    try:
        term.read_until(lambda t: "Connected" in t, 15)
        term.type(json.dumps({"op": "subscribe", "jobId": job["jobId"]}))
        term.read_until(lambda t: '"type":"completed"' in t or '"status":"completed"' in t, 30)
        term.type('{"op":"dance"}')
        text = term.read_until(lambda t: '"code":"bad_request"' in t, 10)
    finally:
        term.close()
    frames = frames_in(text)
    assert frames[0] == {"type": "ack", "op": "subscribe", "jobId": job["jobId"]}
    assert any(f.get("jobId") == job["jobId"] and f["type"] == "snapshot" for f in frames)
    assert frames[-1]["type"] == "error"

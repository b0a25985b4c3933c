"""`delineate-client` for scripts and people: exit codes, --version, --json, a closed pipe,
the final screen, tokens from the environment or a command, and resumed downloads."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from delineate_client import AsyncClient, Backoff
from delineate_client.cli import _plain_bar
from delineate_protocol.frames import CompletedFrame, ProgressFrame, UnknownFrame, decode_frame
from tests.conftest import ReplicaFactory
from tests.support.clients import AVAILABLE, UNAVAILABLE
from tests.support.processes import Replica

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "delineate_client.cli"]
FAST = Backoff(base=0.05, cap=0.5)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process, with only the DELINEATE_* variables given here."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DELINEATE_")}
    return subprocess.run([*CLI, *args], env={**inherited, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_and_usage_and_unreachable_exit_codes() -> None:
    """--version prints the distribution's version (0); a usage error is 2; a server that
    cannot be reached is 3, with one line on stderr and no traceback."""
    version = cli("--version")
    assert (version.returncode, version.stdout.strip()) == (0, "delineate-client 0.1.0")
    assert cli().returncode == 2
    assert cli("initiate", "not-a-number").returncode == 2
    down = cli("--url", f"http://127.0.0.1:{closed_port()}", "status", "x", timeout=120)
    assert down.returncode == 3
    assert down.stderr.startswith("delineate-client: ")
    assert "Traceback" not in down.stderr


def test_a_failed_job_exits_1_with_its_reason_and_the_missing_files(server: Replica) -> None:
    """The final screen names the final state, the failure reason and the files that did
    not exist; the exit code is 1."""
    env = {"DELINEATE_URL": server.url}
    job_id = cli("initiate", str(UNAVAILABLE), env=env).stdout.strip()
    watch = cli("watch", job_id, env=env)
    lines = watch.stdout.splitlines()
    assert watch.returncode == 1, watch.stderr
    assert f"job {job_id}: failed, 0.0%" in lines
    assert any(line.startswith("reason: no_files_available: ") for line in lines)
    assert f"not found: {UNAVAILABLE}" in lines


def test_json_prints_one_frame_per_line_and_a_closed_pipe_is_quiet(
    replica_factory: ReplicaFactory,
) -> None:
    """`watch --json` lines each decode to a frame; `watch --json JOB | head -n 1` ends
    without a traceback when head closes the pipe."""
    replica = replica_factory(DOWNLOAD_DELAY_MIN_MS="3000", DOWNLOAD_DELAY_MAX_MS="3000")
    env = {"DELINEATE_URL": replica.url}
    job_id = cli("initiate", *map(str, AVAILABLE), env=env).stdout.strip()
    full_env = {**os.environ, **env}
    whole = subprocess.Popen([*CLI, "watch", "--json", job_id], env=full_env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    command = f"{shlex.join([*CLI, 'watch', '--json', job_id])} | head -n 1"
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=full_env,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    out, _ = whole.communicate(timeout=60)
    assert piped.stdout.count("\n") == 1
    assert piped.stderr == ""
    assert piped.returncode == 141  # the watcher's own code, through pipefail
    frames = [decode_frame(line) for line in out.splitlines()]
    assert whole.returncode == 0
    assert not any(isinstance(f, UnknownFrame) for f in frames)
    assert any(isinstance(f, ProgressFrame) for f in frames)
    assert isinstance(frames[-1], CompletedFrame)


def test_tokens_from_the_environment_and_from_a_command(replica_factory: ReplicaFactory) -> None:
    """With auth on: $DELINEATE_TOKEN and --token-command authenticate; a refused token or a
    failing command exits 3."""
    replica = replica_factory(API_KEYS="cli:cli-key")
    env = {"DELINEATE_URL": replica.url, "DELINEATE_TOKEN": "cli-key"}
    job_id = cli("initiate", str(UNAVAILABLE), env=env).stdout.strip()
    assert cli("watch", job_id, env=env).returncode == 1  # followed to its (failed) end
    by_command = {"DELINEATE_URL": replica.url}
    status = cli("--token-command", "echo cli-key", "status", job_id, env=by_command)
    assert status.returncode == 0, status.stderr
    assert msgspec.json.decode(status.stdout)["jobId"] == job_id
    assert cli("--token", "wrong", "status", job_id, env=by_command).returncode == 3
    failing = cli("--token-command", "exit 7", "status", job_id, env=by_command)
    assert failing.returncode == 3
    assert "--token-command: exit 7" in failing.stderr


async def test_download_resumes_from_the_part_file_and_reports_progress(
    server: Replica, tmp_path: Path
) -> None:
    """A .part file left by a cut download is continued with Range, not fetched again; the
    progress callback sees the bytes on disk grow to the total."""
    async with AsyncClient(server.url, backoff=FAST) as client:
        job = await client.initiate(AVAILABLE)
        await client.wait(job.job_id, timeout=60)
        whole = (await client.download(job.job_id, tmp_path / "whole.zip")).read_bytes()
        half = len(whole) // 2
        (tmp_path / "resumed.zip.part").write_bytes(b"\0" * half)  # marks the kept half
        seen: list[tuple[int, int | None]] = []
        path = await client.download(
            job.job_id, tmp_path / "resumed.zip", progress=lambda d, t: seen.append((d, t))
        )
    assert path.read_bytes() == b"\0" * half + whole[half:]
    assert seen[0][0] > half
    assert seen[-1] == (len(whole), len(whole))
    assert not (tmp_path / "resumed.zip.part").exists()
    printed = cli(
        "download", job.job_id, str(tmp_path / "cli.zip"), env={"DELINEATE_URL": server.url}
    )
    assert printed.returncode == 0
    assert printed.stdout.strip() == str(tmp_path / "cli.zip")
    assert (tmp_path / "cli.zip").read_bytes() == whole


def test_the_plain_download_bar_shows_bytes_and_percent() -> None:
    """Without rich, the terminal bar shows percent and bytes and ends its line at 100%."""
    import io

    out = io.StringIO()
    update = _plain_bar(out)
    update(512 * 1024, 1024 * 1024)
    update(1024 * 1024, 1024 * 1024)
    assert "[" + "#" * 15 + "-" * 15 + "]  50.0%  512.0 KB/1.0 MB" in out.getvalue()
    assert out.getvalue().endswith("100.0%  1.0 MB/1.0 MB\x1b[K\n")

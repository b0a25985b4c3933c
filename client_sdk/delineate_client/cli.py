"""``delineate-client``: start, inspect, watch and download jobs from a terminal or a script.

    delineate-client initiate 70000 70007        # prints the job id
    delineate-client watch JOB                   # live progress bar (plain lines when piped)
    delineate-client watch --json JOB            # one frame per line, for scripts
    delineate-client status JOB
    delineate-client download JOB bundle.zip     # progress bar; a second run resumes

The server is --url or $DELINEATE_URL (default http://127.0.0.1:3000); the credential is
--token or $DELINEATE_TOKEN, or --token-command, a shell command that prints a fresh token
(run again before each reconnect and after a 401).

Exit codes: 0 the job completed (or the command did what it says); 1 the job failed or was
cancelled, or the server refused the request (unknown job, not finished); 2 a usage error;
3 the server cannot be reached or refused the credential; 141 the output pipe was closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import TextIO

import msgspec

from delineate_client.auth import TokenSource
from delineate_client.client import AsyncClient
from delineate_client.errors import (
    ConnectionFailed,
    DelineateError,
    HTTPError,
    Timeout,
    Unauthorized,
)
from delineate_protocol.frames import (
    AnyFrame,
    CancelledFrame,
    CompletedFrame,
    FailedFrame,
    FileFrame,
    FileState,
    JobSnapshot,
    JobStatus,
    ProgressFrame,
    SnapshotFrame,
    StatusFrame,
)

BAR_WIDTH = 30
EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_PIPE = 0, 1, 2, 3, 141
TOKEN_COMMAND_TIMEOUT_S = 30.0


class TokenCommandFailed(Unauthorized):
    def __init__(self, message: str) -> None:
        super().__init__(401, None, f"--token-command: {message}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressView:
    """Turns frames into terminal output: a redrawn bar on a TTY, one line per frame otherwise."""

    def __init__(self, out: TextIO, tty: bool, base_url: str = "") -> None:
        self.out, self.tty, self.base_url = out, tty, base_url
        self._first_bytes: tuple[float, int] | None = None

    def show(self, frame: AnyFrame) -> None:
        if isinstance(frame, ProgressFrame):
            self._progress(frame.progress, frame.bytes_done, frame.bytes_total)
        elif isinstance(frame, SnapshotFrame):
            job = frame.job
            self._line(f"job {job.job_id}: {job.status.value}, {job.progress:.1f}%")
        elif isinstance(frame, StatusFrame):
            self._line(f"status: {frame.status.value} (attempt {frame.attempt})")
        elif isinstance(frame, FileFrame):
            f = frame.file
            size = human_bytes(f.size) if f.size is not None else "-"
            self._line(f"file {f.file_id}: {f.state.value} ({size})")
        elif isinstance(frame, CompletedFrame):
            self._line(f"completed: {human_bytes(frame.size)}, {frame.files_included} files")
        elif isinstance(frame, FailedFrame):
            self._line(f"failed: {frame.error.code}: {frame.error.message}")
        elif isinstance(frame, CancelledFrame):
            self._line(f"cancelled: {frame.reason}")

    def summary(self, job: JobSnapshot) -> None:
        """The final screen: the final state, why it failed, files that did not exist, and
        the link to paste."""
        self._line(f"job {job.job_id}: {job.status.value}, {job.progress:.1f}%")
        if job.error is not None:
            self._line(f"reason: {job.error.code}: {job.error.message}")
        missing = [f.file_id for f in job.files if f.state is FileState.UNAVAILABLE]
        if missing:
            self._line("not found: " + ", ".join(map(str, missing)))
        if job.download_url:
            self._line(f"download: {_absolute(self.base_url, job.download_url)}")

    def _progress(self, percent: float, done: int, total: int) -> None:
        rate, eta = self._rate(done, total)
        text = f"{percent:5.1f}%  {human_bytes(done)}/{human_bytes(total)}  {rate}  ETA {eta}"
        if not self.tty:
            self.out.write(f"progress {text}\n")
            return
        self.out.write(f"\r{bar(percent)} {text}\x1b[K")
        self.out.flush()

    def _rate(self, done: int, total: int) -> tuple[str, str]:
        now = time.monotonic()
        if self._first_bytes is None:
            self._first_bytes = (now, done)
            return "-", "-"
        t0, b0 = self._first_bytes
        elapsed = now - t0
        if elapsed <= 0 or done <= b0:
            return "-", "-"
        per_s = (done - b0) / elapsed
        return f"{human_bytes(per_s)}/s", f"{max(0, (total - done) / per_s):.0f}s"

    def _line(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
        self.out.write(text + "\n")
        self.out.flush()


def bar(percent: float) -> str:
    filled = int(BAR_WIDTH * min(max(percent, 0.0), 100.0) / 100)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def _absolute(base_url: str, url: str) -> str:
    return AsyncClient.absolute_url_for(base_url, url)


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient(args.url, token_source(args)) as client:
        if args.command == "initiate":
            job = await client.initiate(args.file_ids, args.idempotency_key)
            print(msgspec.json.encode(job).decode() if args.json else job.job_id)
        elif args.command == "status":
            print(msgspec.json.encode(await client.status(args.job)).decode())
        elif args.command == "cancel":
            print((await client.cancel(args.job)).status.value)
        elif args.command == "download":
            print(await download(client, args.job, Path(args.path)))
        elif args.command == "watch":
            return await watch(client, args.job, as_json=args.json)
    return EXIT_OK


async def watch(client: AsyncClient, job_id: str, *, as_json: bool = False) -> int:
    view = ProgressView(sys.stdout, sys.stdout.isatty() and not as_json, client.base_url)
    # aclosing: a closed pipe raises in the loop; the subscription must close right here.
    async with contextlib.aclosing(client.subscribe(job_id)) as frames:
        async for frame in frames:
            if as_json:
                sys.stdout.write(msgspec.json.encode(frame).decode() + "\n")
                sys.stdout.flush()
            else:
                view.show(frame)
    final = await client.status(job_id)
    if not as_json:
        view.summary(final)
    return EXIT_OK if final.status is JobStatus.COMPLETED else EXIT_JOB_FAILED


async def download(client: AsyncClient, job_id: str, path: Path) -> Path:
    """The bundle, with a byte progress bar on a terminal (rich's, when installed)."""
    if not sys.stderr.isatty():
        return await client.download(job_id, path)
    try:
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn
    except ImportError:
        return await client.download(job_id, path, progress=_plain_bar(sys.stderr))
    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(path.name, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        return await client.download(job_id, path, progress=update)


def _plain_bar(out: TextIO) -> Callable[[int, int | None], None]:
    def update(done: int, total: int | None) -> None:
        percent = 100.0 * done / total if total else 0.0
        size = f"{human_bytes(done)}/{human_bytes(total)}" if total else human_bytes(done)
        out.write(f"\r{bar(percent)} {percent:5.1f}%  {size}\x1b[K")
        if total is not None and done >= total:
            out.write("\n")
        out.flush()

    return update


def token_source(args: argparse.Namespace) -> TokenSource | None:
    if args.token_command:
        return command_token(args.token_command)
    token: str | None = args.token or os.environ.get("DELINEATE_TOKEN") or None
    return token


def command_token(command: str) -> Callable[[], Awaitable[str]]:
    """A token source that runs ``command`` (through the shell) and reads its first line."""

    async def fresh() -> str:
        process = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(TOKEN_COMMAND_TIMEOUT_S):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TokenCommandFailed(f"no token within {TOKEN_COMMAND_TIMEOUT_S:.0f} s") from None
        lines = out.decode(errors="replace").strip().splitlines()
        if process.returncode != 0 or not lines:
            detail = err.decode(errors="replace").strip()[:200] or "printed no token"
            raise TokenCommandFailed(f"exit {process.returncode}: {detail}")
        return lines[0].strip()

    return fresh


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="delineate-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("--url", default=os.environ.get("DELINEATE_URL", "http://127.0.0.1:3000"))
    p.add_argument("--token", help="API key or JWT (default: $DELINEATE_TOKEN)")
    p.add_argument("--token-command", help="a shell command that prints a fresh token")
    commands = p.add_subparsers(dest="command", required=True)
    start = commands.add_parser("initiate", help="start a job; prints its id")
    start.add_argument("file_ids", nargs="+", type=int)
    start.add_argument("--idempotency-key")
    start.add_argument("--json", action="store_true", help="print the whole response")
    watching = commands.add_parser("watch", help="follow the job live")
    watching.add_argument("job")
    watching.add_argument("--json", action="store_true", help="print one frame per line")
    for name, text in (("status", "print the job document"), ("cancel", "cancel the job")):
        commands.add_parser(name, help=text).add_argument("job")
    saving = commands.add_parser("download", help="save the bundle (resumes a cut download)")
    saving.add_argument("job")
    saving.add_argument("path")
    return p


def _version() -> str:
    return version("delineate-client")


def exit_code(exc: DelineateError) -> int:
    if isinstance(exc, Unauthorized | ConnectionFailed | Timeout):
        return EXIT_UNREACHABLE
    if isinstance(exc, HTTPError) and exc.status in (502, 503, 504):
        return EXIT_UNREACHABLE
    return EXIT_JOB_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error
    try:
        return asyncio.run(run(args))
    except DelineateError as exc:
        print(f"delineate-client: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`watch JOB | head`): no traceback, and no second error when
        # Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""``delineate-client``: start, inspect, watch and download jobs from a terminal.

    delineate-client initiate 70000 70007        # prints the job id
    delineate-client watch JOB                   # live progress bar (plain lines when piped)
    delineate-client status JOB
    delineate-client download JOB bundle.zip

The server is ``--url`` or ``$DELINEATE_URL`` (default http://127.0.0.1:3000).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import TextIO

import msgspec

from client_sdk.client import AsyncClient
from client_sdk.errors import DelineateError
from server.frames import (
    AnyFrame,
    CancelledFrame,
    CompletedFrame,
    FailedFrame,
    FileFrame,
    JobSnapshot,
    ProgressFrame,
    SnapshotFrame,
    StatusFrame,
)

BAR_WIDTH = 30


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressView:
    """Turns frames into terminal output: a redrawn bar on a TTY, one line per frame otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out, self.tty = out, tty
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
            self._line(f"download: {frame.download_url}")
        elif isinstance(frame, FailedFrame):
            self._line(f"failed: {frame.error.code}: {frame.error.message}")
        elif isinstance(frame, CancelledFrame):
            self._line("cancelled")

    def _progress(self, percent: float, done: int, total: int) -> None:
        rate, eta = self._rate(done, total)
        text = f"{percent:5.1f}%  {human_bytes(done)}/{human_bytes(total)}  {rate}  ETA {eta}"
        if not self.tty:
            self.out.write(f"progress {text}\n")
            return
        filled = int(BAR_WIDTH * percent / 100)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.out.write(f"\r[{bar}] {text}\x1b[K")
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


async def run(args: argparse.Namespace) -> int:
    async with AsyncClient(args.url) as client:
        if args.command == "initiate":
            job = await client.initiate(args.file_ids, args.idempotency_key)
            print(msgspec.json.encode(job).decode() if args.json else job.job_id)
        elif args.command == "status":
            print(msgspec.json.encode(await client.status(args.job)).decode())
        elif args.command == "cancel":
            print((await client.cancel(args.job)).status.value)
        elif args.command == "download":
            print(await client.download(args.job, args.path))
        elif args.command == "watch":
            return await watch(client, args.job)
    return 0


async def watch(client: AsyncClient, job_id: str) -> int:
    view = ProgressView(sys.stdout, sys.stdout.isatty())
    last: AnyFrame | None = None
    async for frame in client.subscribe(job_id):
        view.show(frame)
        last = frame
    final: JobSnapshot | None = last.job if isinstance(last, SnapshotFrame) else None
    failed = isinstance(last, FailedFrame | CancelledFrame) or (
        final is not None and final.status.value != "completed"
    )
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="delineate-client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=os.environ.get("DELINEATE_URL", "http://127.0.0.1:3000"))
    commands = p.add_subparsers(dest="command", required=True)
    start = commands.add_parser("initiate", help="start a job; prints its id")
    start.add_argument("file_ids", nargs="+", type=int)
    start.add_argument("--idempotency-key")
    start.add_argument("--json", action="store_true", help="print the whole response")
    for name, text in (
        ("status", "print the job document"),
        ("watch", "follow the job live"),
        ("cancel", "cancel the job"),
    ):
        commands.add_parser(name, help=text).add_argument("job")
    download = commands.add_parser("download", help="save the bundle")
    download.add_argument("job")
    download.add_argument("path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except DelineateError as exc:
        print(f"delineate-client: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

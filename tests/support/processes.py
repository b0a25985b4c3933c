"""Test-side wrappers over ``server.stack``'s process classes: a missing tool or a process
that never becomes ready FAILS the test (it never skips)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import stack
from server.stack import StackError, find_binary, free_port

__all__ = ["Replica", "free_port", "require_binary", "started"]

TEST_ENV = {
    "DOWNLOAD_DELAY_ENABLED": "true",
    "DOWNLOAD_DELAY_MIN_MS": "800",
    "DOWNLOAD_DELAY_MAX_MS": "1200",
    "PROGRESS_INTERVAL_MS": "50",
    "RATE_LIMIT_MAX_REQUESTS": "1000000",
    "URL_SIGNING_SECRET": "test-secret",
    "LOG_FORMAT": "text",
}


def require_binary(name: str) -> str:
    """The path of ``name``; a missing tool fails the test (`make test` installs them all)."""
    found = find_binary(name)
    if found is None:
        pytest.fail(f"{name} is not installed; `make test` installs everything the tests need")
    return found


def started(process: stack.Managed) -> stack.Managed:
    try:
        process.start()
    except StackError as exc:
        pytest.fail(str(exc))
    return process


class Replica(stack.Replica):
    """A real server process with the test defaults (~1 s jobs, no rate limit to speak of)."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, port: int | None = None
    ) -> None:
        super().__init__(name, {**TEST_ENV, **env}, log_dir, port)

    def start(self) -> None:
        try:
            super().start()
        except StackError as exc:
            pytest.fail(str(exc))

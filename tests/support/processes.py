"""Test-side wrappers over ``delineate.devstack.stack``'s process classes: a missing tool or a
process that never becomes ready FAILS the test (it never skips)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from delineate.devstack import stack
from delineate.devstack.stack import StackError, find_binary, free_port

__all__ = ["Replica", "ReplicaGroup", "free_port", "require_binary", "started"]

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


def started(process: Any) -> Any:
    """``process`` (a ``stack.Managed``, or a group of them: a Redis Cluster, Sentinels)
    started; a failure to start fails the test."""
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


class ReplicaGroup:
    """The replicas one test starts, numbered in order; ``stop`` ends them all (a fixture's
    teardown)."""

    def __init__(self, log_dir: Path, prefix: str = "replica") -> None:
        self.log_dir, self.prefix = log_dir, prefix
        self.replicas: list[Replica] = []

    def start(self, env: dict[str, str], port: int | None = None) -> Replica:
        name = f"{self.prefix}-{len(self.replicas)}"
        replica = Replica(name, {"REPLICA_ID": name, **env}, self.log_dir, port)
        self.replicas.append(replica)
        replica.start()
        return replica

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

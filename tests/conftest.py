"""Shared fixtures: real server processes on ephemeral loopback ports, torn down by pid."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Replica


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


ReplicaFactory = Callable[..., Replica]


@pytest.fixture
def replica_factory(tmp_path: Path) -> Iterator[ReplicaFactory]:
    """Start replicas with extra settings; every one is stopped after the test."""
    started: list[Replica] = []

    def start(name: str = "replica", **env: str) -> Replica:
        env.setdefault("DATA_DIR", str(tmp_path / "data"))
        replica = Replica(f"{name}-{len(started)}", env, tmp_path)
        started.append(replica)
        replica.start()
        return replica

    yield start
    for replica in started:
        replica.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One replica with ~1 s jobs, shared by the tests that need no special settings."""
    tmp = tmp_path_factory.mktemp("server")
    replica = Replica("shared", {"DATA_DIR": str(tmp / "data")}, tmp)
    replica.start()
    yield replica
    replica.stop()


@pytest.fixture
async def http(server: Replica) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client

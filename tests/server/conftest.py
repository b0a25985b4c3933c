"""Fixtures shared by the backend contract tests under tests/server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import require_binary, started
from tests.support.services import RedisCluster, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on an ephemeral loopback port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One real Redis Cluster (3 primaries + 3 replicas) for the contract tests."""
    require_binary("redis-server")
    require_binary("redis-cli")
    cluster = started(RedisCluster(tmp_path_factory.mktemp("cluster")))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(session_cluster: RedisCluster) -> str:
    """The session's Cluster, emptied for this test (every primary flushed)."""
    import redis

    for port in session_cluster.primary_ports():
        with redis.Redis(port=port, socket_timeout=5) as client:
            client.flushall()
    return session_cluster.url

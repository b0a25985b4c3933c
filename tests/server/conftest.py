"""Fixtures shared by the backend contract tests under tests/server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on an ephemeral loopback port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()

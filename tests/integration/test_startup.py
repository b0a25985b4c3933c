"""A replica started while its Redis is away (a failover, a restart, compose bringing both up
at once) waits for it instead of exiting."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from delineate.devstack.stack import Managed, http_ok
from tests.support.processes import Replica
from tests.support.services import RedisServer

pytestmark = pytest.mark.integration


def serving(replica: Replica) -> bool:
    try:
        return http_ok(f"{replica.url}/health")
    except httpx.HTTPError:
        return False


def test_a_replica_started_before_its_redis_waits_for_it(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, fsync="none")
    replica = Replica("early", {"REDIS_URL": redis.url, "DATA_DIR": str(tmp_path / "data")},
                      tmp_path)  # fmt: skip
    Managed.start(replica)  # the process only: its health is what this test waits for
    try:
        time.sleep(2)
        assert replica.alive, replica.log()
        assert not serving(replica)
        redis.start()
        replica.wait_until(lambda: http_ok(f"{replica.url}/health"), 30, "health once Redis is up")
        reply = httpx.post(f"{replica.url}/v1/download/initiate", json={"file_ids": [70000]})
        assert reply.status_code == 202, reply.text
        assert "redis not ready" in replica.log_path.read_text()  # log() keeps only the tail
    finally:
        replica.stop()
        redis.stop()

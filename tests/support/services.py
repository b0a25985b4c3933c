"""Real backing services for tests: redis-server and SeaweedFS's S3 (``weed mini``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from delineate.devstack.stack import (
    S3_KEY,
    S3_SECRET,
    RedisCluster,
    RedisSentinels,
    RedisServer,
    SeaweedS3,
)
from tests.support.processes import require_binary, started

SEEDED_IDS = [70000, 70007, 70014, 70021, 70028, 10003]
"""Source files every S3-backed deployment gets (demo content, standard sizes)."""

__all__ = ["Backend", "RedisCluster", "RedisSentinels", "RedisServer", "SeaweedS3", "wait_serving"]

REDIS_KINDS = ("redis", "cluster", "sentinel")
"""Backends on Redis: one node, a Cluster (3 primaries + 3 replicas), or a primary + replica
watched by 3 sentinels."""


def redis_of(kind: str, tmp: Path, fsync: str = "always") -> Any:
    """A (not yet started) Redis deployment of ``kind``; every one has ``url`` and ``stop``."""
    require_binary("redis-server")
    if kind == "cluster":
        require_binary("redis-cli")
        return RedisCluster(tmp, fsync=fsync)
    if kind == "sentinel":
        return RedisSentinels(tmp, fsync=fsync)
    return RedisServer(tmp, fsync=fsync)


class Backend:
    """What the replicas of one deployment share: the embedded store, or Redis (one node, a
    Cluster or Sentinels) + an S3 bucket."""

    def __init__(
        self, kind: str, tmp: Path, s3: SeaweedS3 | None, redis_fsync: str = "always"
    ) -> None:
        self.kind, self.tmp, self.s3 = kind, tmp, s3
        self.redis_fsync = redis_fsync
        self.redis: Any = None
        self.bucket = f"t-{uuid.uuid4().hex[:16]}"

    @property
    def shared(self) -> bool:
        return self.kind in REDIS_KINDS

    def start(self) -> None:
        if not self.shared:
            return
        self.redis = redis_of(self.kind, self.tmp, self.redis_fsync)
        started(self.redis)
        self.seed(SEEDED_IDS)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()

    def env(self) -> dict[str, str]:
        if not self.shared:
            return {"DATA_DIR": str(self.tmp / "data")}
        assert self.redis is not None
        assert self.s3 is not None
        return {"REDIS_URL": self.redis.url, **self.s3.settings_for(self.bucket)}

    def seed(self, ids: list[int], size: int | None = None) -> None:
        argv = [sys.executable, "-m", "delineate", "seed", "--ids", ",".join(map(str, ids))]
        if size is not None:
            argv += ["--size", str(size)]
        done = subprocess.run(
            argv, env={**os.environ, **self.env()}, capture_output=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"delineate seed failed:\n{done.stderr.decode()[-3000:]}")

    def bundle_keys(self) -> list[str]:
        """Objects under exports/ (finished bundles and anything left behind)."""
        if not self.shared:
            exports = self.tmp / "data" / "exports"
            return (
                sorted(f"exports/{p.name}" for p in exports.iterdir()) if exports.exists() else []
            )
        assert self.s3 is not None
        listing = s3_client(self.s3).list_objects_v2(Bucket=self.bucket, Prefix="exports/")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def read_object(self, key: str) -> bytes:
        if not self.shared:
            return (self.tmp / "data" / key).read_bytes()
        assert self.s3 is not None
        body: bytes = s3_client(self.s3).get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


def wait_serving(server: SeaweedS3, bucket: str, key: str, timeout: float = 30) -> None:
    """Wait until ``server`` serves ``key`` again. A restarted SeaweedFS answers S3 requests
    (and HEAD bucket) before its volume server is back, and a GET meanwhile is an
    InternalError: not "S3 is back" yet."""
    client = s3_client(server)
    server.wait_until(
        lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read() is not None,
        timeout,
        f"SeaweedFS to serve {key}",
    )


def s3_client(server: SeaweedS3) -> Any:
    config = Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5)
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
        config=config,
    )

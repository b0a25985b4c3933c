"""Real backing services for tests: redis-server and SeaweedFS's S3 (``weed mini``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import redis
from botocore.config import Config

from tests.support.processes import Process, free_port, require_binary, wait_until

SEEDED_IDS = [70000, 70007, 70014, 70021, 70028, 10003]
"""Source files every S3-backed deployment gets (demo content, standard sizes)."""

S3_KEY, S3_SECRET = "delineate-test", "delineate-test-secret"


class RedisServer(Process):
    """redis-server on a free loopback port, with an append-only file so a restart keeps data."""

    def __init__(self, log_dir: Path, name: str = "redis") -> None:
        self.port = free_port()
        self.dir = log_dir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            require_binary("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
        ]  # fmt: skip
        super().__init__(name, argv, dict(os.environ), log_dir)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        client = redis.Redis(port=self.port, socket_timeout=1)
        wait_until(client.ping, 15, "redis-server to answer PING", self)
        client.close()


class SeaweedS3(Process):
    """SeaweedFS in one process (``weed mini``), every port free and on loopback."""

    PORTS = (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
        "webdav.port", "admin.port", "admin.port.grpc", "debug.port",
    )  # fmt: skip

    def __init__(self, log_dir: Path, name: str = "seaweedfs") -> None:
        self.ports = {key: free_port() for key in self.PORTS}
        self.dir = log_dir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            require_binary("weed"), "mini", f"-dir={self.dir}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-admin.ui=false",
            *(f"-{key}={port}" for key, port in self.ports.items()),
        ]  # fmt: skip
        super().__init__(name, argv, dict(os.environ), log_dir)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"

    def client(self) -> Any:
        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
            config=config,
        )

    def start(self) -> None:
        super().start()
        s3 = self.client()
        wait_until(lambda: s3.list_buckets() is not None, 30, "SeaweedFS S3 to answer", self)


class Backend:
    """What the replicas of one deployment share: the embedded store, or Redis + an S3 bucket."""

    def __init__(self, kind: str, tmp: Path, s3: SeaweedS3 | None) -> None:
        self.kind, self.tmp, self.s3 = kind, tmp, s3
        self.redis: RedisServer | None = None
        self.bucket = f"t-{uuid.uuid4().hex[:16]}"

    @property
    def shared(self) -> bool:
        return self.kind == "redis"

    def start(self) -> None:
        if not self.shared:
            return
        self.redis = RedisServer(self.tmp)
        self.redis.start()
        self.seed(SEEDED_IDS)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()

    def env(self) -> dict[str, str]:
        if not self.shared:
            return {"DATA_DIR": str(self.tmp / "data")}
        assert self.redis is not None
        assert self.s3 is not None
        return {
            "REDIS_URL": self.redis.url,
            "S3_BUCKET_NAME": self.bucket,
            "S3_ENDPOINT": self.s3.endpoint,
            "S3_ACCESS_KEY_ID": S3_KEY,
            "S3_SECRET_ACCESS_KEY": S3_SECRET,
            "S3_FORCE_PATH_STYLE": "true",
        }

    def seed(self, ids: list[int], size: int | None = None) -> None:
        argv = [sys.executable, "-m", "server", "seed", "--ids", ",".join(map(str, ids))]
        if size is not None:
            argv += ["--size", str(size)]
        subprocess.run(
            argv, env={**os.environ, **self.env()}, check=True, capture_output=True, timeout=120
        )

    def bundle_keys(self) -> list[str]:
        """Objects under exports/ (finished bundles and anything left behind)."""
        if not self.shared:
            exports = self.tmp / "data" / "exports"
            return (
                sorted(f"exports/{p.name}" for p in exports.iterdir()) if exports.exists() else []
            )
        assert self.s3 is not None
        listing = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix="exports/")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def read_object(self, key: str) -> bytes:
        if not self.shared:
            return (self.tmp / "data" / key).read_bytes()
        assert self.s3 is not None
        body: bytes = self.s3.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

"""``delineate stack``: a production-like deployment on loopback, without Docker.

redis-server, SeaweedFS (S3), N replicas and nginx, each a child process on a free loopback
port; the bucket is created and seeded; Ctrl-C (or SIGTERM) stops everything, children
first by pid, so nothing is left behind. The tests start the same pieces through the same
classes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from server import nginx

S3_KEY, S3_SECRET = "delineate", "delineate-secret"


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str | None:
    """``name`` next to this Python (a venv's bin), on PATH, or in /usr/sbin (nginx)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def require(name: str) -> str:
    found = find_binary(name)
    if found is None:
        raise StackError(f"{name} is not installed (`make test` installs it)")
    return found


class Managed:
    """A child process with its output in a log file, stopped by its own pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def wait_until(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise StackError(f"{self.name} exited while waiting for {what}:\n{self.log()}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.05)
        raise StackError(f"timed out waiting for {what}:\n{self.log()}")

    def stop(self, timeout: float = 10) -> None:
        if not self.alive:
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)


def http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=1).status_code < 500


class RedisServer(Managed):
    """redis-server on loopback with an append-only file, so a restart keeps jobs.

    ``fsync="always"`` (tests, the stack) syncs the file before every reply, so even
    ``kill -9`` of Redis loses nothing; ``"everysec"`` is Redis's default and the compose
    file's: the bench uses it, since a synced write blocks every client of that Redis for as
    long as the disk takes (stalls of 200-300 ms every few seconds were seen here)."""

    def __init__(
        self, log_dir: Path, name: str = "redis", port: int | None = None, fsync: str = "always"
    ) -> None:
        self.port = port or free_port()
        self.dir = log_dir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
            "--appendfsync", fsync,
        ]  # fmt: skip
        super().__init__(name, argv, dict(os.environ), log_dir)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        super().start()
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            self.wait_until(client.ping, 15, "redis-server to answer PING")
        finally:
            client.close()


class SeaweedS3(Managed):
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
            require("weed"), "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", *(f"-{key}={port}" for key, port in self.ports.items()),
        ]  # fmt: skip
        super().__init__(name, argv, dict(os.environ), log_dir)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"

    def settings_for(self, bucket: str) -> dict[str, str]:
        """The settings a replica needs to use this server."""
        return {
            "S3_BUCKET_NAME": bucket,
            "S3_ENDPOINT": self.endpoint,
            "S3_ACCESS_KEY_ID": S3_KEY,
            "S3_SECRET_ACCESS_KEY": S3_SECRET,
            "S3_FORCE_PATH_STYLE": "true",
        }

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: http_ok(self.endpoint), 30, "SeaweedFS S3 to answer")


class Replica(Managed):
    """One Delineate server process (``python -m server serve``)."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        full_env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "REPLICA_ID": name,
            **env,
            "PORT": str(self.port),
        }
        super().__init__(name, [sys.executable, "-m", "server", "serve"], full_env, log_dir)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: http_ok(f"{self.url}/health"), 20, f"{self.name} to answer /health")


class Nginx(Managed):
    def __init__(self, config: nginx.NginxConfig, log_dir: Path, name: str = "nginx") -> None:
        self.config = config
        path = nginx.write(config)
        argv = [
            require("nginx"),
            "-c",
            str(path),
            "-p",
            config.prefix,
            "-e",
            f"{config.prefix}/error.log",
        ]
        super().__init__(name, argv, dict(os.environ), log_dir)
        self.url = f"http://{config.listen}"
        self.ws_url = f"ws://{config.listen}"

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: http_ok(f"{self.url}/"), 15, "nginx to answer")


class StackOptions(msgspec.Struct, kw_only=True):
    replicas: int = 3
    port: int = 8080
    seed: int = 50
    data_dir: str = ""
    env: dict[str, str] = msgspec.field(default_factory=dict)


class Stack:
    """Everything `delineate stack` starts, in start order."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.dir = Path(options.data_dir or tempfile.mkdtemp(prefix="delineate-stack-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started: list[Managed] = []
        self.replicas: list[Replica] = []
        self.redis = RedisServer(self.dir)
        self.s3 = SeaweedS3(self.dir)
        self.nginx: Nginx | None = None

    def replica_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            **self.s3.settings_for("delineate"),
            "URL_SIGNING_SECRET": "stack-secret",
            "TRUSTED_PROXIES": "127.0.0.1",
            "LOG_FORMAT": "text",
            **self.options.env,
        }

    def _start(self, process: Managed) -> None:
        process.start()
        self.started.append(process)

    def start(self) -> None:
        self._start(self.redis)
        self._start(self.s3)
        self._seed()
        for i in range(self.options.replicas):
            replica = Replica(f"replica-{i + 1}", self.replica_env(), self.dir)
            self._start(replica)
            self.replicas.append(replica)
        config = nginx.NginxConfig(
            upstreams=[f"127.0.0.1:{r.port}" for r in self.replicas],
            listen=f"127.0.0.1:{self.options.port}",
            prefix=str(self.dir / "nginx"),
        )
        self.nginx = Nginx(config, self.dir)
        self._start(self.nginx)

    def _seed(self) -> None:
        argv = [sys.executable, "-m", "server", "seed", "--count", str(self.options.seed)]
        env = {**os.environ, **self.replica_env()}
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)

    def stop(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()

    def describe(self) -> str:
        assert self.nginx is not None
        lines = [
            f"Delineate stack ({len(self.replicas)} replicas) in {self.dir}",
            f"  entry (nginx):   {self.nginx.url}",
            f"  page, API docs:  {self.nginx.url}/app  {self.nginx.url}/docs",
            *(f"  {r.name}:       {r.url}" for r in self.replicas),
            f"  redis:           {self.redis.url}",
            f"  S3 (SeaweedFS):  {self.s3.endpoint}  bucket 'delineate'",
            f"  demo files:      {self.options.seed} ids from 70000 in steps of 7",
            f"  logs:            {self.dir}/*.log",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def run(options: StackOptions) -> int:
    stack = Stack(options)

    def stop_on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        stack.start()
        print(stack.describe(), flush=True)
        while all(p.alive for p in stack.started):
            time.sleep(0.5)
        dead = [p.name for p in stack.started if not p.alive]
        print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(f"delineate stack: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()

"""``delineate stack``: a production-like deployment on loopback, without Docker.

redis-server, SeaweedFS (S3), N replicas and nginx, each a child process on a free loopback
port; the bucket is created and seeded; Ctrl-C (or SIGTERM) stops everything, children
first by pid, so nothing is left behind. The tests start the same pieces through the same
classes.
"""

from __future__ import annotations

import contextlib
import os
import random
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

from delineate.devstack import nginx

S3_KEY, S3_SECRET = "delineate", "delineate-secret"


class StackError(RuntimeError):
    pass


# Ports are drawn below the kernel's ephemeral range: bind(port 0) hands out one from that
# range, which an outgoing connection (a load client's, a Redis client's) may take before the
# child process binds it.
FIRST_PORT = 10000
_pick = random.Random(os.getpid() ^ time.time_ns())


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unknown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int, offset: int = 0) -> list[int]:
    """``n`` distinct free loopback ports outside the ephemeral range (each with ``port +
    offset`` free and outside it too, when ``offset`` is given)."""
    high = ephemeral_low() - offset
    if high - FIRST_PORT < 1000:
        raise StackError(f"no room for ports below the ephemeral range (starts at {high + offset})")
    chosen: list[int] = []
    for port in _pick.sample(range(FIRST_PORT, high), high - FIRST_PORT):
        taken = {*chosen, *(p + offset for p in chosen)}
        if port in taken or port + offset in taken:
            continue
        if _bindable(port) and (not offset or _bindable(port + offset)):
            chosen.append(port)
            if len(chosen) == n:
                return chosen
    raise StackError(f"no {n} free ports below {high}")


def free_port() -> int:
    return free_ports(1)[0]


def free_offset_pair(offset: int) -> tuple[int, int]:
    """A free port ``p`` with ``p + offset`` free too."""
    port = free_ports(1, offset)[0]
    return port, port + offset


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
    long as the disk takes. ``"none"`` keeps nothing: a restart comes back empty (the fault
    tests).

    The settings live in a config file that Redis may rewrite (``CONFIG REWRITE``, which
    Sentinel runs after it re-points a node), so a restarted node comes back in the role it
    last had, as one run from its config file by a service manager does."""

    def __init__(
        self,
        log_dir: Path,
        name: str = "redis",
        port: int | None = None,
        fsync: str = "always",
        extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = log_dir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "no"] if fsync == "none" else [
            "--appendonly", "yes", "--appendfsync", fsync,
        ]  # fmt: skip
        options = [
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", f'"{self.dir}"',
            "--save", '""', *persistence, *(extra or []),
        ]  # fmt: skip
        self.config = log_dir / f"{name}.conf"  # beside the data: a wipe keeps it
        self.config.write_text(config_lines(options))
        argv = [require("redis-server"), str(self.config)]
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


def config_lines(options: list[str]) -> str:
    """``["--port", "1", "--replicaof", "h", "2"]`` as redis.conf lines."""
    lines: list[list[str]] = []
    for token in options:
        if token.startswith("--"):
            lines.append([token[2:]])
        else:
            lines[-1].append(token)
    return "".join(" ".join(line) + "\n" for line in lines)


def _redis_cli(*args: str, timeout: float = 60) -> str:
    argv = [require("redis-cli"), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise StackError(f"redis-cli {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_for(ready: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise StackError(f"timed out waiting for {what}")


class RedisCluster:
    """A Redis Cluster on loopback: ``primaries`` primaries with one replica each, made with
    ``redis-cli --cluster create``. A short node timeout, so a killed primary's replica takes
    over within seconds; full coverage not required, so the other slots keep serving."""

    def __init__(
        self, log_dir: Path, primaries: int = 3, fsync: str = "always", node_timeout_ms: int = 1000
    ) -> None:
        options = [
            "--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-require-full-coverage", "no", "--cluster-replica-validity-factor", "0",
        ]  # fmt: skip

        def bus(port: int) -> list[str]:
            return ["--cluster-port", str(port)]

        count = primaries * 2
        ports = free_ports(count * 2)
        self.nodes = [
            RedisServer(
                log_dir,
                name=f"redis-cluster-{i}",
                port=ports[i],
                fsync=fsync,
                # A bus port of its own (the default, port + 10000, may be taken or too high).
                extra=[*options, "--cluster-config-file", f"nodes-{i}.conf", *bus(ports[-1 - i])],
            )
            for i in range(count)
        ]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        self.name = "redis-cluster"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        _redis_cli(
            "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas", "1", "--cluster-yes",
        )  # fmt: skip
        wait_for(self.healthy, 30, "the cluster to be ok on every node")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and every slot's primary is up."""
        import redis

        for node in self.nodes:
            if not node.alive:
                continue
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return len(self.primary_ports()) * 2 >= len(self.nodes)

    def replicated(self) -> bool:
        """Every node up, the cluster ok, and every primary followed by an in-sync replica."""
        import redis

        if not all(n.alive for n in self.nodes) or not self.healthy():
            return False
        primaries = set(self.primary_ports())
        followed: set[int] = set()
        for node in self.nodes:
            with redis.Redis(port=node.port, socket_timeout=1) as client:
                info = client.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                followed.add(int(info["master_port"]))
        return len(primaries) * 2 == len(self.nodes) and followed == primaries

    def primary_ports(self) -> list[int]:
        """Ports of the live primaries that own slots, as a live node sees it."""
        import redis

        live = next(n for n in self.nodes if n.alive)
        with redis.Redis(port=live.port, socket_timeout=1) as client:
            slots = client.execute_command("CLUSTER", "SLOTS")
        ports = {int(entry[2][1]) for entry in slots}
        alive = {n.port for n in self.nodes if n.alive}
        return sorted(ports & alive) if ports <= alive else []

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def slot_count(self, port: int) -> int:
        """How many slots the primary on ``port`` owns."""
        import redis

        live = next(n for n in self.nodes if n.alive)
        with redis.Redis(port=live.port, socket_timeout=1) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        return sum(end - start + 1 for start, end, primary, *_ in ranges if primary[1] == port)

    def owner_of(self, key: str) -> RedisServer:
        import redis
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        live = next(n for n in self.nodes if n.alive)
        with redis.Redis(port=live.port, socket_timeout=1) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node(int(primary[1]))
        raise StackError(f"no node owns slot {slot}")

    @property
    def alive(self) -> bool:
        return any(n.alive for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisSentinels:
    """A primary, two replicas and three sentinels on loopback (quorum 2). A primary that is
    down for a second is failed over to a replica.

    Every node runs with ``min-replicas-to-write 1``: a primary with no live replica refuses
    writes (``NOREPLICAS``). A killed primary that restarts from its own files believes it
    is still the primary until the sentinels demote it; alone, it now refuses the writes it
    would otherwise take and then lose. With two replicas the promoted one keeps the other,
    so writes go on after a failover while the old primary is still away."""

    SERVICE = "delineate"
    WRITE_GUARD = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]

    def __init__(self, log_dir: Path, fsync: str = "always", down_after_ms: int = 1000) -> None:
        self.primary = RedisServer(
            log_dir, name="redis-primary", fsync=fsync, extra=self.WRITE_GUARD
        )
        follow = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replicas = [
            RedisServer(
                log_dir, name=f"redis-replica-{i}", fsync=fsync, extra=[*follow, *self.WRITE_GUARD]
            )
            for i in range(2)
        ]
        self.nodes = [self.primary, *self.replicas]
        self.sentinels: list[Managed] = []
        self.sentinel_ports = [free_port() for _ in range(3)]
        for i, port in enumerate(self.sentinel_ports):
            conf = log_dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {log_dir}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
                f"sentinel parallel-syncs {self.SERVICE} 1\n"
            )
            argv = [require("redis-server"), str(conf), "--sentinel"]
            self.sentinels.append(Managed(f"sentinel-{i}", argv, dict(os.environ), log_dir))
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{self.SERVICE}"
        self.name = "redis-sentinels"

    def start(self) -> None:
        import redis

        for node in self.nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()

        def known() -> bool:
            for port in self.sentinel_ports:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    others = client.execute_command("SENTINEL", "SENTINELS", self.SERVICE)
                    replicas = client.execute_command("SENTINEL", "REPLICAS", self.SERVICE)
                    if len(others) < 2 or len(replicas) < len(self.replicas):
                        return False
            return True

        wait_for(self.replicated, 30, "the replicas to sync")
        wait_for(known, 30, "the sentinels to know each other and the replicas")

    def replicated(self) -> bool:
        """Every node up, the one the sentinels name is the primary, the others follow it."""
        import redis

        if not all(node.alive for node in self.nodes):
            return False
        primary = self.primary_port()
        for follower in self.nodes:
            if follower.port == primary:
                continue
            with redis.Redis(port=follower.port, socket_timeout=1) as client:
                info = client.info("replication")
            if info.get("master_link_status") != "up" or info["master_port"] != primary:
                return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers names it."""
        import redis

        for port in self.sentinel_ports:
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(port=port, socket_timeout=1) as client,
            ):
                addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
                return int(addr[1])
        raise StackError("no sentinel answers")

    def node_of(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    @property
    def alive(self) -> bool:
        return any(node.alive for node in self.nodes)

    def stop(self) -> None:
        for process in (*self.sentinels, *reversed(self.nodes)):
            process.stop()


class SeaweedS3(Managed):
    """SeaweedFS in one process (``weed mini``), every port free and on loopback."""

    PORTS = (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
        "webdav.port", "admin.port", "admin.port.grpc", "debug.port",
    )  # fmt: skip

    def __init__(self, log_dir: Path, name: str = "seaweedfs") -> None:
        self.ports = dict(zip(self.PORTS, free_ports(len(self.PORTS)), strict=True))
        # weed's maintenance worker dials the admin's HTTP port + 10000 whatever
        # admin.port.grpc says: keep that pair together and in range.
        self.ports["admin.port"], self.ports["admin.port.grpc"] = free_offset_pair(10000)
        self.dir = log_dir / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [
            require("weed"), "mini", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", *(f"-{key}={port}" for key, port in self.ports.items()),
            # Every bucket is a collection with volumes of its own, and by default the volume
            # count is free disk / 1 GiB: a suite's worth of buckets would run out of volumes.
            "-master.volumeSizeLimitMB=64", "-volume.max=4000",
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
    """One Delineate server process (``python -m delineate serve``)."""

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
        super().__init__(name, [sys.executable, "-m", "delineate", "serve"], full_env, log_dir)
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
    redis: str = "single"
    """"single" (one redis-server), "cluster" (3 primaries + 3 replicas) or "sentinel"
    (primary + 2 replicas + 3 sentinels)."""
    env: dict[str, str] = msgspec.field(default_factory=dict)


class Stack:
    """Everything `delineate stack` starts, in start order."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.dir = Path(options.data_dir or tempfile.mkdtemp(prefix="delineate-stack-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started: list[Managed | RedisCluster | RedisSentinels] = []
        self.replicas: list[Replica] = []
        self.redis: RedisServer | RedisCluster | RedisSentinels = {
            "single": RedisServer, "cluster": RedisCluster, "sentinel": RedisSentinels,
        }[options.redis](self.dir)  # fmt: skip
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

    def _start(self, process: Managed | RedisCluster | RedisSentinels) -> None:
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
        argv = [sys.executable, "-m", "delineate", "seed", "--count", str(self.options.seed)]
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

"""Shared fixtures: real server processes on ephemeral loopback ports, torn down by pid.

Behavioural tests run once per backend: ``memory`` (embedded: in-process broker and job
store, local-disk storage) and ``redis`` (a real redis-server and a real S3 server,
SeaweedFS), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from server.nginx import NginxConfig
from server.stack import Nginx
from tests.support.processes import Replica, free_port, require_binary, started
from tests.support.services import Backend, SeaweedS3

BACKENDS = ["memory", "redis"]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS for the session; each deployment uses a bucket of its own."""
    server = SeaweedS3(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_backend(kind: str, tmp: Path, request: pytest.FixtureRequest) -> Backend:
    s3 = request.getfixturevalue("s3_server") if kind == "redis" else None
    backend = Backend(kind, tmp, s3)
    backend.start()
    return backend


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh backend for this test (its own redis-server and bucket when shared)."""
    made = make_backend(backend_kind, tmp_path, request)
    yield made
    made.stop()


ReplicaFactory = Callable[..., Replica]


@pytest.fixture
def replica_factory(backend: Backend, tmp_path: Path) -> Iterator[ReplicaFactory]:
    """Start replicas on this test's backend with extra settings; all stopped afterwards."""
    started: list[Replica] = []

    def start(name: str = "replica", **env: str) -> Replica:
        replica = Replica(f"{name}-{len(started)}", {**backend.env(), **env}, backend.tmp)
        started.append(replica)
        replica.start()
        return replica

    yield start
    for replica in started:
        replica.stop()


@pytest.fixture(scope="session")
def shared_backend(
    backend_kind: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Backend]:
    made = make_backend(backend_kind, tmp_path_factory.mktemp(f"shared-{backend_kind}"), request)
    yield made
    made.stop()


@pytest.fixture(scope="session")
def server(shared_backend: Backend) -> Iterator[Replica]:
    """One replica with ~1 s jobs, shared by the tests that need no special settings."""
    replica = Replica(f"shared-{shared_backend.kind}", shared_backend.env(), shared_backend.tmp)
    replica.start()
    yield replica
    replica.stop()


@pytest.fixture
async def http(server: Replica) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


EdgeFactory = Callable[..., Nginx]


@pytest.fixture
def edge_factory(tmp_path: Path) -> Iterator[EdgeFactory]:
    """Start a real nginx in front of the given replicas (rendered from nginx/)."""
    started_nginx: list[Nginx] = []

    def start(
        replicas: list[Replica], upstream_params: dict[int, str] | None = None, **options: object
    ) -> Nginx:
        """``upstream_params`` adds nginx server parameters by index, e.g. {1: "backup"}."""
        params = upstream_params or {}
        prefix = tmp_path / f"nginx-{len(started_nginx)}"
        config = NginxConfig(
            upstreams=[
                f"127.0.0.1:{r.port} {params.get(i, '')}".strip() for i, r in enumerate(replicas)
            ],
            listen=f"127.0.0.1:{free_port()}",
            prefix=str(prefix),
            **options,  # type: ignore[arg-type]
        )
        require_binary("nginx")
        proxy = Nginx(config, tmp_path, name=f"nginx-{len(started_nginx)}")
        started_nginx.append(proxy)
        started(proxy)
        return proxy

    yield start
    for proxy in started_nginx:
        proxy.stop()


Cluster = Callable[..., list[Replica]]


@pytest.fixture
def redis_backend(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Backend]:
    backend = Backend("redis", tmp_path, s3_server)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def cluster(redis_backend: Backend) -> Iterator[Cluster]:
    """Start ``n`` replicas sharing one redis-server and one bucket."""
    started: list[Replica] = []

    def start(n: int, **env: str) -> list[Replica]:
        replicas = []
        for _ in range(n):
            name = f"replica-{len(started)}"
            settings = {**redis_backend.env(), "REPLICA_ID": name, **env}
            replica = Replica(name, settings, redis_backend.tmp)
            started.append(replica)
            replicas.append(replica)
        for replica in replicas:
            replica.start()
        return replicas

    yield start
    for replica in started:
        replica.stop()

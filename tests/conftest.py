"""Shared fixtures: real server processes on ephemeral loopback ports, torn down by pid.

Behavioural tests run once per backend: ``memory`` (embedded: in-process broker and job
store, local-disk storage), ``redis`` (a real redis-server and a real S3 server, SeaweedFS)
and ``cluster`` (a real Redis Cluster of 3 primaries + 3 replicas, and SeaweedFS), so they
cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from delineate import versions
from delineate.devstack.nginx import NginxConfig
from delineate.devstack.stack import Nginx
from tests.support.processes import Replica, ReplicaGroup, free_port, require_binary, started
from tests.support.services import Backend, SeaweedS3

BACKENDS = ["memory", "redis", "cluster"]
# Tests that pin a library's private parts, and the library: outside its tested range they
# fail at once with the reason, before anything else can fail obscurely.
PINNED_MODULES = {
    "tests.server.uvicorn_ext.test_http": "uvicorn",
    "tests.server.test_wire": "uvicorn",
    "tests.server.uvicorn_ext.test_lean_protocol": "uvicorn",
    "tests.server.uvicorn_ext.test_close_deadline": "uvicorn",
    "tests.server.redis.test_client": "redis",
    "tests.server.redis.test_pipe": "redis",
    "tests.server.broker.test_redis_pubsub": "redis",
}


@pytest.fixture(autouse=True)
def _tested_library_version(request: pytest.FixtureRequest) -> None:
    library = PINNED_MODULES.get(request.module.__name__)
    if library is not None and (reason := versions.unsupported(library)) is not None:
        pytest.fail(reason, pytrace=False)


CLUSTER_SUITE = {
    "tests/integration/test_jobs.py",
    "tests/integration/test_websocket.py",
    "tests/integration/test_sse.py",
    "tests/integration/test_guarantees.py",
    "tests/client_sdk/test_client.py",
}
"""The behavioural tests that run on the ``cluster`` backend by default: jobs, both streaming
transports, the guarantees and the SDK (about two minutes on 2 cores; the rest of the suite
adds five). ``DELINEATE_CLUSTER_SUITE=all`` runs every one on it; tests/server's contract
tests and tests/integration/test_redis_modes.py always run on a Cluster."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DELINEATE_CLUSTER_SUITE") == "all":
        return
    root = Path(str(config.rootpath))
    kept, left = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and callspec.params.get("backend_kind") == "cluster"
        path = Path(str(item.path)).relative_to(root).as_posix()
        (left if on_cluster and path not in CLUSTER_SUITE else kept).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


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
    s3 = request.getfixturevalue("s3_server") if kind != "memory" else None
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
    group = ReplicaGroup(backend.tmp)

    def start(name: str = "replica", **env: str) -> Replica:
        group.prefix = name
        return group.start({**backend.env(), **env})

    yield start
    group.stop()


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
    group = ReplicaGroup(redis_backend.tmp)

    def start(n: int, **env: str) -> list[Replica]:
        return [group.start({**redis_backend.env(), **env}) for _ in range(n)]

    yield start
    group.stop()

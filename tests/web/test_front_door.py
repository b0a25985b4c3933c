"""How a person finds the page: `delineate serve` and `make run` say where it is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from delineate.cli import page_url
from tests.web.conftest import EmbeddedFactory

ROOT = Path(__file__).resolve().parents[2]


def test_page_url_names_loopback_for_a_wildcard_bind() -> None:
    """A server bound to every address is opened on 127.0.0.1; other hosts are kept."""
    assert page_url("0.0.0.0", 3000) == "http://127.0.0.1:3000/"
    assert page_url("::", 3000) == "http://127.0.0.1:3000/"
    assert page_url("127.0.0.1", 8001) == "http://127.0.0.1:8001/"
    assert page_url("::1", 3000) == "http://[::1]:3000/"


@pytest.mark.integration
def test_serve_prints_the_page_url_and_root_still_greets_programs(
    embedded: EmbeddedFactory,
) -> None:
    """`delineate serve` prints the page's URL once it listens; `GET /` answers the original
    JSON to programs and the page to browsers."""
    replica = embedded()
    assert f"Delineate is up: open http://127.0.0.1:{replica.port}/" in replica.log()
    assert httpx.get(replica.url, timeout=5).json() == {"message": "Hello Hono!"}
    page = httpx.get(replica.url, headers={"accept": "text/html"}, timeout=5)
    assert "<title>Delineate downloads</title>" in page.text


def test_make_run_binds_loopback() -> None:
    """The README promises `make run` serves on 127.0.0.1 (the server's own default is every
    address, for containers)."""
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    serve = [line for line in dry.stdout.splitlines() if "delineate serve" in line]
    assert len(serve) == 1
    assert "HOST=${HOST:-127.0.0.1}" in serve[0]

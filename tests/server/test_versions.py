"""The uvicorn and redis-py the server runs on are the ones its private-part modules were
tested against, and pyproject.toml's bounds and the lock say the same ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from delineate import versions
from tests.conftest import PINNED_MODULES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("library", sorted(versions.SUPPORTED))
def test_the_installed_version_is_in_the_tested_range(library: str) -> None:
    """An upgrade fails here first, with the range and the modules to re-read."""
    assert versions.unsupported(library) is None, versions.unsupported(library)


@pytest.mark.parametrize("library", sorted(versions.SUPPORTED))
def test_pyproject_and_the_lock_hold_the_tested_range(library: str) -> None:
    """The dependency has the range as its bounds, and the lock pins a version inside it."""
    (low, high) = versions.SUPPORTED[library]
    bound = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(rf"{library}(\[[^\]]*\])?{re.escape(bound)}$", d) for d in dependencies)
    locked = re.search(rf"^{library}==(\d+)\.(\d+)", (ROOT / "constraints.txt").read_text(), re.M)
    assert locked is not None
    assert low <= (int(locked[1]), int(locked[2])) < high


def test_the_pinned_test_modules_exist() -> None:
    """The conftest's list of tests that pin private parts names real modules."""
    for module in PINNED_MODULES:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_outside_the_range_the_reason_names_the_version_and_the_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failure message says what is installed, what was tested, and what to re-read."""
    monkeypatch.setattr(versions, "version", lambda name: "9.0.1")
    reason = versions.unsupported("redis")
    assert reason is not None
    assert "redis 9.0.1 is outside the tested range 8.1 <= v < 8.2" in reason

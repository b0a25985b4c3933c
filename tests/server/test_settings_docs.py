"""docs/operations.md documents every setting there is, and only those."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from delineate.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ROW = re.compile(r"^\| ((?:`[A-Z0-9_]+`(?: / |, )?)+) \|")
READ_BY_LIBRARIES = {
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
}  # fmt: skip
"""Documented beside the settings, read by the OpenTelemetry SDK itself."""


def documented() -> set[str]:
    """Every variable named in the first column of a table of the operations guide."""
    names: set[str] = set()
    for line in DOC.read_text().splitlines():
        if match := ROW.match(line):
            names |= set(re.findall(r"`([A-Z0-9_]+)`", match.group(1)))
    return names


def test_every_setting_is_documented_and_every_documented_one_exists() -> None:
    """A new setting without a row, or a row for a setting that is gone, fails here."""
    settings = {field.name.upper() for field in msgspec.structs.fields(Settings)}
    assert sorted(settings - documented()) == []
    assert sorted(documented() - settings - READ_BY_LIBRARIES) == []

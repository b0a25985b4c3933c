"""The AsyncAPI document: valid AsyncAPI 3.0.0, built from the wire types, and the copy in
docs/ is current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from delineate.api import asyncapi
from delineate_protocol.frames import AnyFrame

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "tests/support/schemas/asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build()


def test_the_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    """It passes the official AsyncAPI 3.0.0 JSON Schema."""
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(document)


def test_invalid_documents_are_refused() -> None:
    """The schema check is real: a channel without its required shape fails it."""
    broken = asyncapi.build()
    broken["operations"]["sendEvents"]["action"] = "shout"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(broken)


def test_every_frame_type_is_described(document: dict[str, Any]) -> None:
    """Each member of the frame union has its schema, with its epoch and seq."""
    schemas = document["components"]["schemas"]
    for frame in AnyFrame.__args__:
        props = schemas[frame.__name__]["properties"]
        assert {"type", "jobId", "epoch", "seq"} <= props.keys(), frame.__name__


def test_the_copy_in_docs_is_current(document: dict[str, Any]) -> None:
    """docs/asyncapi.json is what the server serves (`python -m delineate.api.asyncapi`)."""
    assert json.loads((ROOT / "docs/asyncapi.json").read_text()) == document

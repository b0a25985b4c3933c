"""HTTP request and response bodies (msgspec Structs; the OpenAPI document is built from them).

Request fields keep the original service's snake_case (``file_id``, ``file_ids``); response
keys follow its camelCase (``jobId``, ``downloadUrl``), and ``check`` keeps its exact mix.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from delineate_protocol.frames import JobId, JobStatus, Wire

FileId = Annotated[
    int,
    msgspec.Meta(
        ge=10_000,
        le=100_000_000,
        description="A file id; ids divisible by 7 exist in the demo store.",
        examples=[70000],
    ),
]


IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
"""1-255 printable ASCII characters without spaces."""


class CheckRequest(msgspec.Struct):
    file_id: FileId


class StartRequest(msgspec.Struct):
    file_id: FileId


class InitiateRequest(msgspec.Struct):
    file_ids: Annotated[list[FileId], msgspec.Meta(min_length=1, max_length=1000)]


class RootResponse(msgspec.Struct):
    message: str


class HealthResponse(msgspec.Struct):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, Literal["ok", "error"]]


class CheckResponse(msgspec.Struct):
    file_id: int
    available: bool
    s3_key: str | None = msgspec.field(name="s3Key")
    size: int | None


class StartResponse(msgspec.Struct):
    file_id: int
    status: Literal["completed", "failed"]
    download_url: str | None = msgspec.field(name="downloadUrl")
    size: int | None
    processing_time_ms: int = msgspec.field(name="processingTimeMs")
    message: str


class InitiateResponse(Wire, kw_only=True):
    job_id: JobId
    status: JobStatus
    total_file_ids: int
    created_at: str
    status_url: str
    result_url: str
    subscribe_url: str
    stream_url: str
    cancel_url: str
    stream_token: str | None = None
    """When auth is on: a short-lived token for `?token=` on the subscribe and stream URLs."""


class ResultResponse(Wire, kw_only=True):
    job_id: JobId
    status: JobStatus
    download_url: str
    expires_at: str
    size: int | None


class ErrorResponse(msgspec.Struct, omit_defaults=True):
    error: str
    message: str
    request_id: str = msgspec.field(name="requestId")
    status: JobStatus | None = None
    """Set on 409s about a job's state: the state it is in."""

"""The only place object keys are built, so no user input ever becomes a path by itself."""

from __future__ import annotations

import re
import uuid

_KEY = re.compile(r"^(downloads/[0-9]{1,12}|exports/[0-9a-f-]{36}\.[0-9]{1,9})\.zip$")


def source_key(file_id: int) -> str:
    return f"downloads/{int(file_id)}.zip"


def bundle_key(job_id: str, attempt: int = 1) -> str:
    """A bundle per attempt (the record's fence): a stale attempt never writes over, or
    deletes, the output of the attempt that owns the job."""
    return f"exports/{uuid.UUID(job_id)}.{int(attempt)}.zip"


def is_valid_key(key: str) -> bool:
    return bool(_KEY.match(key))

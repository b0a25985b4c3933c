"""The only place object keys are built, so no user input ever becomes a path by itself."""

from __future__ import annotations

import re
import uuid

_KEY = re.compile(r"^(downloads|exports)/[0-9a-f-]{1,36}\.zip$")


def source_key(file_id: int) -> str:
    return f"downloads/{int(file_id)}.zip"


def bundle_key(job_id: str) -> str:
    return f"exports/{uuid.UUID(job_id)}.zip"


def is_valid_key(key: str) -> bool:
    return bool(_KEY.match(key))

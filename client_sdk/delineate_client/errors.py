"""The SDK's one error tree; transport errors are mapped to it at the boundary.

DelineateError
├── HTTPError            the server answered with an error status (``status``, ``body``)
│   ├── Unauthorized     401: auth is on and the token is missing, unknown or expired
│   └── JobNotFound      404 for a job id (or another owner's job)
├── JobFailed            the job ended ``failed`` (``error_code``, ``frame``), with raise_on_failure
├── Timeout              a request or ``wait`` ran out of time
└── ConnectionFailed     the server could not be reached (after retries, where retried)
"""

from __future__ import annotations

from typing import Any


class DelineateError(Exception):
    pass


class HTTPError(DelineateError):
    def __init__(self, status: int, body: Any, message: str | None = None) -> None:
        self.status, self.body = status, body
        detail = body.get("message") if isinstance(body, dict) else None
        super().__init__(message or f"HTTP {status}: {detail or body}")


class Unauthorized(HTTPError):
    pass


class JobNotFound(HTTPError):
    pass


class JobFailed(DelineateError):
    def __init__(self, job_id: str, code: str, message: str) -> None:
        self.job_id, self.error_code = job_id, code
        super().__init__(f"job {job_id} failed: {code}: {message}")


class Timeout(DelineateError):
    pass


class ConnectionFailed(DelineateError):
    pass

"""The server's one error tree, and its mapping to HTTP statuses and WebSocket close codes.

    DelineateError (500, 1011)
    ├── BadRequest (400, 1008)            malformed input: body, id, query, WebSocket op
    │   └── UnsupportedMediaType (415)
    ├── Unauthorized (401, 4401)          auth is on and the credential is missing or wrong
    ├── NotFound (404, 4404)              unknown job (or one the caller may not see)
    ├── Conflict (409, 4409)              idempotency key reuse, job not finished, job finished
    ├── Forbidden (403, 4403)             tampered or expired download link
    ├── PayloadTooLarge (422)             the files asked for exceed MAX_BUNDLE_BYTES
    ├── BodyTooLarge (413)                the request body exceeds MAX_BODY_BYTES
    ├── RateLimited (429, 1013)           request rate, sockets per address, active jobs
    ├── GatewayTimeout (504, 1011)
    ├── BackendUnavailable (503, 1013)    Redis unreachable: retry
    └── StorageError (503, 1011)          the object store failed (permanently)
        ├── ObjectMissing                 a key that should exist does not
        └── TransientStorageError         worth retrying (unreachable, 5xx, throttled)

Handlers in ``delineate.http.responses`` turn these into ``{"error", "message", "requestId"}``
bodies; the real-time endpoints turn them into ``error`` frames or close codes.
"""

from __future__ import annotations

from http import HTTPStatus

from delineate_protocol.codes import CloseCode, ErrorCode
from delineate_protocol.frames import JobStatus


class DelineateError(Exception):
    status: int = 500
    close_code: CloseCode = CloseCode.SERVER_ERROR
    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class BadRequest(DelineateError):
    status, close_code, code = 400, CloseCode.POLICY, ErrorCode.BAD_REQUEST


class UnsupportedMediaType(BadRequest):
    status, code = 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unauthorized(DelineateError):
    status, close_code, code = 401, CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED


class PayloadTooLarge(DelineateError):
    """The request asks for more than a setting allows (the bundle would be too big)."""

    status, close_code, code = 422, CloseCode.POLICY, ErrorCode.BUNDLE_TOO_LARGE


class BodyTooLarge(DelineateError):
    """The request body is larger than MAX_BODY_BYTES (the server usually refuses it before
    the app runs: ``delineate.uvicorn_ext.http``)."""

    status, close_code, code = 413, CloseCode.MESSAGE_TOO_BIG, ErrorCode.BODY_TOO_LARGE


class NotFound(DelineateError):
    status, close_code, code = 404, CloseCode.NOT_FOUND, ErrorCode.NOT_FOUND


class Conflict(DelineateError):
    status, close_code, code = 409, CloseCode.CONFLICT, ErrorCode.CONFLICT


class Forbidden(DelineateError):
    status, close_code, code = 403, CloseCode.FORBIDDEN, ErrorCode.FORBIDDEN


class RateLimited(DelineateError):
    status, close_code, code = 429, CloseCode.TRY_AGAIN_LATER, ErrorCode.RATE_LIMITED


class GatewayTimeout(DelineateError):
    status, code = 504, ErrorCode.TIMEOUT


class BackendUnavailable(DelineateError):
    """The shared broker/job store (Redis) cannot be reached right now; worth retrying."""

    status, close_code, code = 503, CloseCode.TRY_AGAIN_LATER, ErrorCode.BACKEND_UNAVAILABLE


class StorageError(DelineateError):
    """The object store could not do what was asked (network, permissions, ...)."""

    status, code = 503, ErrorCode.STORAGE_ERROR


class ObjectMissing(StorageError):
    code = ErrorCode.OBJECT_MISSING


class TransientStorageError(StorageError):
    """Worth retrying: the store was unreachable, slow, or answered 5xx / SlowDown."""

    code = ErrorCode.STORAGE_UNAVAILABLE


class JobStateConflict(Conflict):
    """The job is not in a state that allows this (result before completion, cancel after)."""

    code = ErrorCode.JOB_STATE

    def __init__(self, message: str, job_status: JobStatus) -> None:
        super().__init__(message)
        self.job_status = job_status

"""Error codes (the ``error`` of an HTTP error body, of a WebSocket ``error`` message and of a
failed job) and WebSocket close codes: one enum each, shared by the server and the SDK.

Both are str/int enums, so a value compares equal to the plain string or integer on the wire,
and a code a newer server adds still decodes (as the plain value) in an older client.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    # Request errors (delineate.errors' tree).
    INTERNAL_ERROR = "internal_error"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    JOB_STATE = "job_state"
    ILLEGAL_TRANSITION = "illegal_transition"
    BODY_TOO_LARGE = "body_too_large"
    BUNDLE_TOO_LARGE = "bundle_too_large"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    STORAGE_ERROR = "storage_error"
    OBJECT_MISSING = "object_missing"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    # Why a job failed (``error.code`` of a ``failed`` frame), besides the ones above.
    NO_FILES_AVAILABLE = "no_files_available"
    JOB_LOST = "job_lost"


class CloseCode(enum.IntEnum):
    """Why the server closed a WebSocket (RFC 6455 codes, and 4xxx for the API's own)."""

    NORMAL = 1000
    """The job ended (single-job socket), after its terminal frame."""
    GOING_AWAY = 1001
    POLICY = 1008
    """A malformed request (bad job id, bad ``since``)."""
    MESSAGE_TOO_BIG = 1009
    SERVER_ERROR = 1011
    SERVICE_RESTART = 1012
    """The replica is draining: reconnect (to another one) with ``since``."""
    TRY_AGAIN_LATER = 1013
    """Slow consumer, too many sockets from one address, or the backend away: reconnect."""
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    IDLE = 4408
    """A multiplexed socket followed no job for ``IDLE_SOCKET_TIMEOUT_S``."""
    CONFLICT = 4409

    @property
    def retryable(self) -> bool:
        """Whether a client should reconnect (with its position) after this close."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.SERVER_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
    }
)

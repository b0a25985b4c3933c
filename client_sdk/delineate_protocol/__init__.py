"""Delineate's wire protocol: the job document, frames, WebSocket ops and control messages
(``frames``), HTTP request and response bodies (``schemas``), error and close codes
(``codes``). msgspec Structs and enums only; the server and the client both import it."""

from delineate_protocol.codes import CloseCode, ErrorCode
from delineate_protocol.frames import (
    AnyFrame,
    CancelledFrame,
    CompletedFrame,
    FailedFrame,
    FileFrame,
    FileProgress,
    FileState,
    JobError,
    JobSnapshot,
    JobStatus,
    ProgressFrame,
    SnapshotFrame,
    StatusFrame,
    UnknownFrame,
    decode_frame,
)

__all__ = [
    "AnyFrame",
    "CancelledFrame",
    "CloseCode",
    "CompletedFrame",
    "ErrorCode",
    "FailedFrame",
    "FileFrame",
    "FileProgress",
    "FileState",
    "JobError",
    "JobSnapshot",
    "JobStatus",
    "ProgressFrame",
    "SnapshotFrame",
    "StatusFrame",
    "UnknownFrame",
    "decode_frame",
]

"""Wire types of the real-time API: the job document, progress frames and WebSocket ops.

Every type here is a msgspec Struct; the client SDK imports this module, so server and
clients cannot disagree about a field. JSON keys are camelCase like the original service
(``jobId``, ``downloadUrl``); request bodies keep ``file_id``/``file_ids`` (see api.schemas).

Frames form one tagged union on ``type``. Every frame carries ``jobId``, a per-job strictly
increasing ``seq`` (allocated by the broker, so it survives a change of replica) and ``ts``,
the server's wall clock in epoch milliseconds when the frame was emitted.
"""

from __future__ import annotations

import enum
import time
from typing import Annotated, Literal

import msgspec

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JobId = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN, description="A lowercase uuid4.")]
Seq = Annotated[int, msgspec.Meta(ge=0, description="Per-job frame sequence number.")]


class JobStatus(enum.StrEnum):
    """The wire value of a job's state; see ``server.jobs.state`` for legal transitions."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class FileState(enum.StrEnum):
    PENDING = "pending"
    UNAVAILABLE = "unavailable"
    PROCESSING = "processing"
    DONE = "done"


class Wire(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=False):
    """Base of every JSON object on the wire."""


class FileProgress(Wire, kw_only=True):
    file_id: int
    state: FileState = FileState.PENDING
    available: bool | None = None
    size: int | None = None
    bytes_done: int = 0


class JobError(Wire, kw_only=True):
    code: str
    message: str


class JobSnapshot(Wire, kw_only=True):
    """The job document: what ``GET /v1/download/status/{jobId}`` returns."""

    job_id: JobId
    status: JobStatus
    progress: float = 0.0
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    total_file_ids: int = 0
    files: list[FileProgress] = msgspec.field(default_factory=list)
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    error: JobError | None = None
    seq: Seq = 0
    attempt: int = 0
    trace_id: str | None = None
    """The trace of the request that created the job (W3C trace id, 32 hex)."""
    worker: str | None = None
    """The replica running (or that last ran) the job."""
    size: int | None = None
    download_url: str | None = None
    expires_at: str | None = None


# --- frames (server -> client) -------------------------------------------------------


class Frame(Wire, tag_field="type", kw_only=True):
    job_id: str
    seq: Seq
    ts: float = msgspec.field(default_factory=lambda: time.time() * 1000.0)
    trace_id: str | None = None


class SnapshotFrame(Frame, tag="snapshot", kw_only=True):
    """The whole job document. ``recovered=False`` means frames between the client's
    ``since`` and this snapshot are no longer kept and were not replayed."""

    job: JobSnapshot
    recovered: bool = True


class StatusFrame(Frame, tag="status", kw_only=True):
    status: JobStatus
    attempt: int = 0


class ProgressFrame(Frame, tag="progress", kw_only=True):
    progress: float
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int


class FileFrame(Frame, tag="file", kw_only=True):
    file: FileProgress


class CompletedFrame(Frame, tag="completed", kw_only=True):
    download_url: str
    expires_at: str
    size: int
    files_included: int
    files_unavailable: list[int] = msgspec.field(default_factory=list)


class FailedFrame(Frame, tag="failed", kw_only=True):
    error: JobError


class CancelledFrame(Frame, tag="cancelled", kw_only=True):
    reason: str = "cancelled by request"


AnyFrame = (
    SnapshotFrame
    | StatusFrame
    | ProgressFrame
    | FileFrame
    | CompletedFrame
    | FailedFrame
    | CancelledFrame
)
TERMINAL_FRAME_TYPES = frozenset({"completed", "failed", "cancelled"})


class FrameHeader(msgspec.Struct):
    """The fields fan-out needs; decoding only these skips the rest of the frame."""

    type: str
    seq: int
    ts: float = 0.0

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_FRAME_TYPES


# --- the multiplexed socket: client ops and control messages -----------------------------


class Op(Wire, tag_field="op", kw_only=True):
    pass


class SubscribeOp(Op, tag="subscribe", kw_only=True):
    job_id: JobId
    since: Seq | None = None


class UnsubscribeOp(Op, tag="unsubscribe", kw_only=True):
    job_id: JobId


class PingOp(Op, tag="ping", kw_only=True):
    pass


AnyOp = SubscribeOp | UnsubscribeOp | PingOp


class Control(Wire, tag_field="type", kw_only=True):
    pass


class AckMessage(Control, tag="ack", kw_only=True):
    op: Literal["subscribe", "unsubscribe"]
    job_id: str


class PongMessage(Control, tag="pong", kw_only=True):
    ts: float = msgspec.field(default_factory=lambda: time.time() * 1000.0)


class ErrorMessage(Control, tag="error", kw_only=True):
    code: str
    message: str
    job_id: str | None = None


AnyServerMessage = AnyFrame | AckMessage | PongMessage | ErrorMessage

# Built once and shared: msgspec encoders/decoders are reusable and thread-safe.
encoder = msgspec.json.Encoder()
frame_decoder = msgspec.json.Decoder(AnyFrame)
header_decoder = msgspec.json.Decoder(FrameHeader)
op_decoder = msgspec.json.Decoder(AnyOp)
server_message_decoder = msgspec.json.Decoder(AnyServerMessage)

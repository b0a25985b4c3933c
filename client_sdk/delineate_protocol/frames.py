"""Wire types of the real-time API: the job document, progress frames and WebSocket ops.

Every type here is a msgspec Struct; the client SDK imports this module, so server and
clients cannot disagree about a field. JSON keys are camelCase like the original service
(``jobId``, ``downloadUrl``); request bodies keep ``file_id``/``file_ids`` (see api.schemas).

Frames form one tagged union on ``type``. Every frame carries ``jobId``, ``epoch`` and ``seq``
(its position: ``seq`` strictly increases within an epoch, whichever replica writes the job; the
epoch changes only when the store may have lost the job's history or seq) and ``ts``, the
server's wall clock in epoch milliseconds when the frame was emitted.
"""

from __future__ import annotations

import enum
import time
from typing import Annotated, Literal

import msgspec

UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
JobId = Annotated[str, msgspec.Meta(pattern=UUID_PATTERN, description="A lowercase uuid4.")]
Seq = Annotated[int, msgspec.Meta(ge=0, description="Per-job frame sequence number.")]
Epoch = Annotated[
    str,
    msgspec.Meta(
        pattern="^[0-9a-z]{0,16}$",
        description="Names the incarnation of the job's frame stream; compare for equality only.",
    ),
]
POSITION_PATTERN = "^([0-9a-z]{1,16}:)?[0-9]{1,18}$"
Position = Annotated[
    str,
    msgspec.Meta(
        pattern=POSITION_PATTERN,
        description="A stream position, `<epoch>:<seq>`; a bare `<seq>` means the current epoch.",
    ),
]


class JobStatus(enum.StrEnum):
    """The wire value of a job's state; see ``delineate.jobs.state`` for legal transitions."""

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
    epoch: Epoch = ""
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
    epoch: Epoch = ""
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
    epoch: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_FRAME_TYPES


# --- the multiplexed socket: client ops and control messages -----------------------------


class Op(Wire, tag_field="op", kw_only=True):
    pass


class SubscribeOp(Op, tag="subscribe", kw_only=True):
    job_id: JobId
    since: Seq | Position | None = None
    """The last position the client has: a seq, or an ``"<epoch>:<seq>"`` string."""


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


class UnknownFrame(msgspec.Struct, rename="camel", kw_only=True):
    """A message whose ``type`` this version does not know (a newer server added it): its
    position fields, and the whole object in ``data``. Decoding never fails for it."""

    type: str
    job_id: str = ""
    seq: int = -1
    epoch: str = ""
    data: dict[str, object] = msgspec.field(default_factory=dict)


class _Envelope(msgspec.Struct, rename="camel"):
    type: str
    job_id: str = ""
    seq: int = -1
    epoch: str = ""


# Built once and shared: msgspec encoders/decoders are reusable and thread-safe.
encoder = msgspec.json.Encoder()
frame_decoder = msgspec.json.Decoder(AnyFrame)
header_decoder = msgspec.json.Decoder(FrameHeader)
op_decoder = msgspec.json.Decoder(AnyOp)
server_message_decoder = msgspec.json.Decoder(AnyServerMessage)
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_object_decoder = msgspec.json.Decoder(dict[str, object])
FRAME_TYPES = frozenset(t.__struct_config__.tag for t in AnyFrame.__args__)
SERVER_MESSAGE_TYPES = FRAME_TYPES | {"ack", "pong", "error"}


def decode_frame(data: bytes | str) -> AnyFrame | UnknownFrame:
    """A frame; one of a type this version does not know becomes an ``UnknownFrame``.
    A malformed frame of a known type still raises ``msgspec.ValidationError``."""
    try:
        return frame_decoder.decode(data)
    except msgspec.ValidationError:
        head = _envelope_decoder.decode(data)  # no ``type`` at all: a ValidationError too
        if head.type in FRAME_TYPES:
            raise
        return _unknown(head, data)


def decode_server_message(
    data: bytes | str,
) -> AnyFrame | AckMessage | PongMessage | ErrorMessage | UnknownFrame:
    """Anything the multiplexed socket sends, with unknown types as ``UnknownFrame``."""
    try:
        return server_message_decoder.decode(data)
    except msgspec.ValidationError:
        head = _envelope_decoder.decode(data)
        if head.type in SERVER_MESSAGE_TYPES:
            raise
        return _unknown(head, data)


def _unknown(head: _Envelope, data: bytes | str) -> UnknownFrame:
    return UnknownFrame(
        type=head.type,
        job_id=head.job_id,
        seq=head.seq,
        epoch=head.epoch,
        data=_object_decoder.decode(data),
    )

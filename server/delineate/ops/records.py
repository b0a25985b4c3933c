"""What the operations dashboard shows, as the replicas share it: heartbeats, recent jobs,
recent errors and the spans of job traces (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

import msgspec

Attribute = str | int | float | bool


class Record(msgspec.Struct, rename="camel", kw_only=True, omit_defaults=False):
    pass


class RouteStats(Record):
    """One route over one heartbeat interval; latencies in ms (None: no request)."""

    route: str
    requests: int
    client_errors: int
    server_errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class Perf(Record):
    """A replica's work over its last heartbeat interval."""

    interval_s: float
    requests_per_s: float
    routes: list[RouteStats]
    frames_per_s: float
    fanout_p50_ms: float | None
    fanout_p95_ms: float | None
    loop_lag_ms: float


class JobEntry(Record):
    job_id: str
    status: str
    owner: str | None
    replica: str | None
    files: int
    progress: float
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    trace_id: str | None
    request_id: str | None
    error_code: str | None = None
    error_message: str | None = None


class Heartbeat(Record):
    replica: str
    ts: float
    """Epoch seconds when the replica sent it."""
    started_at: float
    interval_s: float
    draining: bool
    checks: dict[str, str]
    sockets: dict[str, int]
    jobs_running: int
    concurrency: int
    closes_queued: int
    broker_reconnects: int
    running: list[JobEntry]
    perf: Perf | None = None


class ErrorEntry(Record):
    id: str
    ts: float
    replica: str
    kind: str
    """request, job (a job that failed) or log (any other error logged by the server)."""
    logger: str
    message: str
    exception: str | None = None
    request_id: str | None = None
    job_id: str | None = None
    trace_id: str | None = None
    sentry_event_id: str | None = None


class SpanRecord(Record):
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    replica: str | None
    start_ms: float
    end_ms: float
    error: bool
    attributes: dict[str, Attribute]


class ReplicaView(Record):
    """A heartbeat as the dashboard shows it: ``state`` is up, late or lost."""

    state: str
    age_s: float
    beat: Heartbeat


class Links(Record):
    trace: str
    """TRACE_UI_URL, ``{trace_id}`` to replace ("" = no trace UI)."""
    sentry: str


class Overview(Record):
    replica: str
    """The replica that answered."""
    now: float
    replicas: list[ReplicaView]
    jobs: list[JobEntry]
    errors: list[ErrorEntry]
    links: Links


class Trace(Record):
    trace_id: str
    spans: list[SpanRecord]


class BrowserConfig(Record):
    """What the browser pages need to report: their Sentry DSN, and whether the server
    relays their spans (``POST /telemetry/traces``)."""

    sentry_dsn: str
    traces: bool
    replica: str


encode = msgspec.json.encode
decode_beat = msgspec.json.Decoder(Heartbeat).decode
decode_job = msgspec.json.Decoder(JobEntry).decode
decode_error = msgspec.json.Decoder(ErrorEntry).decode
decode_span = msgspec.json.Decoder(SpanRecord).decode

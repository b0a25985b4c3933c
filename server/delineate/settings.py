"""Every tunable of the server, read once from the environment at start-up.

Field names are the environment variable names (``rename="upper"``). Nothing
below this module reads ``os.environ``: the app factory takes a ``Settings``.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import socket
import typing
from collections.abc import Mapping
from typing import Annotated

import msgspec

Milliseconds = Annotated[int, msgspec.Meta(ge=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable and the rule."""


class Settings(msgspec.Struct, kw_only=True, rename="upper", forbid_unknown_fields=False):
    # --- the original service's variables (shared/CONTRACT.md) ---
    host: str = "0.0.0.0"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 3000
    s3_region: Annotated[str, msgspec.Meta(min_length=1)] = "us-east-1"
    s3_endpoint: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_bucket_name: str = ""
    s3_force_path_style: bool = False
    sentry_dsn: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    request_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 30_000
    rate_limit_window_ms: Annotated[int, msgspec.Meta(ge=1000)] = 60_000
    rate_limit_max_requests: Annotated[int, msgspec.Meta(ge=1)] = 100
    cors_origins: str = "*"
    trusted_proxies: str = ""
    """Peers whose X-Forwarded-For / X-Real-IP the rate limiter and the socket cap believe:
    "" (none: a replica is reachable without a proxy, and anyone can send the headers),
    comma-separated addresses (the nginx in front), or `*` (every peer)."""
    download_delay_enabled: bool = True
    download_delay_min_ms: Milliseconds = 10_000
    download_delay_max_ms: Milliseconds = 200_000

    # --- scale-out ---
    replica_id: str = ""
    """Names this process in job documents and telemetry; "" gives <hostname>-<pid>."""
    redis_url: str | None = None
    """Shared broker and job store for several replicas ("" = embedded): one node
    ``redis://host:port/db`` (``rediss://`` for TLS), a Sentinel-managed primary
    ``redis+sentinel://h1:26379,h2:26379/<service>[/db]``, or a Cluster
    ``redis+cluster://h1:7000,h2:7001`` (``delineate.redis.url``)."""
    queue_partitions: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    """Streams the job queue is spread over; 0: one on one node, 6 on a Cluster."""
    s3_create_bucket: bool = True
    s3_part_size_mb: Annotated[int, msgspec.Meta(ge=5, le=5000)] = 8
    s3_max_threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    storage_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    job_lease_ms: Annotated[int, msgspec.Meta(ge=500)] = 15_000
    job_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    job_retry_base_ms: Annotated[int, msgspec.Meta(ge=1)] = 1_000

    # --- embedded defaults ---
    data_dir: str = "data"
    """Root of the local-disk object store (used when S3_BUCKET_NAME is empty)."""
    public_base_url: Annotated[
        str, msgspec.Meta(pattern=r"^(https?://[^/?#\s]+(/[^?#\s]*)?)?$")
    ] = ""
    """The URL clients reach the service at (``https://host[/prefix]``): every absolute link
    the server builds starts with it (job links, download links, Location). "" builds them
    from the request (its Host header) and gives root-relative download links."""
    url_signing_secret: str = ""
    """HMAC key for local download links; "" picks a random one per process."""
    download_url_ttl_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 900

    # --- jobs ---
    job_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 8
    job_retention_s: Annotated[int, msgspec.Meta(ge=60)] = 86_400
    history_max_frames: Annotated[int, msgspec.Meta(ge=16)] = 5_000
    progress_interval_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 100

    # --- real-time transports ---
    ws_ping_interval_s: Seconds = 20.0
    ws_ping_timeout_s: Seconds = 20.0
    ws_per_message_deflate: bool = False
    sse_keepalive_s: Seconds = 15.0
    sse_retry_ms: Annotated[int, msgspec.Meta(ge=0)] = 2_000
    outbox_limit: Annotated[int, msgspec.Meta(ge=8)] = 256
    max_ws_message_bytes: Annotated[int, msgspec.Meta(ge=256)] = 4_096
    max_subscriptions_per_socket: Annotated[int, msgspec.Meta(ge=1)] = 100
    max_sockets_per_ip: Annotated[int, msgspec.Meta(ge=1)] = 200
    """WebSocket + SSE connections one client address may hold on one replica."""

    close_rate: Annotated[float, msgspec.Meta(ge=0)] = 800.0
    """Closes per second at most, per replica, of the single-job sockets and event streams
    whose terminal frame went out (0 = each at once). Their terminal frames are never held:
    when many jobs end together, the closes follow them instead of delaying other frames."""

    watch_audit_s: Annotated[float, msgspec.Meta(ge=0.2, le=300)] = 5.0
    """A followed job that sent nothing for this long is read from the store: a watcher that
    missed frames (published where this replica was not listening) catches up, and one whose
    job the store lost ends with ``job_lost``."""

    idle_socket_timeout_s: Seconds = 30.0
    """A multiplexed socket that follows no job for this long is closed (4408)."""
    slow_consumer_deadline_s: Seconds = 10.0
    """A connection whose outbox stays full this long is closed (1013; resume with since)."""

    gc_sweep_interval_s: Annotated[float, msgspec.Meta(ge=60)] = 3600.0
    """A served replica freezes what survives each young pass of the cyclic collector
    (``delineate.gc_tuning``); this often, one full pass frees the cyclic garbage that kept."""

    # --- closing real-time connections ---
    close_deadline_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    """How long a real-time connection being closed (close frame sent, event stream ended,
    drain) waits for its client to read the rest and finish; then it is reset, freeing its
    buffers, its per-address slot and its place in the connection gauge."""

    # --- who may see what (auth is off unless API_KEYS or JWT_SECRET is set) ---
    api_keys: str = ""
    """Comma-separated `owner:key` pairs; a request presents the key as `X-API-Key: key` or
    `Authorization: Bearer key` and acts as `owner`."""
    jwt_secret: str = ""
    """HS256 key: `Authorization: Bearer <jwt>` acts as the token's `sub`."""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    stream_token_ttl_s: Annotated[int, msgspec.Meta(ge=10, le=3600)] = 300
    max_active_jobs_per_owner: Annotated[int, msgspec.Meta(ge=0)] = 100
    """Unfinished (queued or processing) jobs one owner (or, without auth, one client
    address) may have at once; 0 = no cap."""
    max_bundle_bytes: Annotated[int, msgspec.Meta(ge=0)] = 5 * 1024**3
    """Largest total size of the files one job may bundle; 0 = no cap."""

    # --- limits: a replica holds its own, with or without a proxy in front ---
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024**2)] = 1024**2
    """Largest request body; a larger one is answered 413 as soon as it is known (its
    Content-Length, or the chunk that crosses it), unread, and the connection closed."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024**2)] = 32 * 1024
    """Largest request line plus headers; more is answered 431 and the connection closed."""
    max_header_count: Annotated[int, msgspec.Meta(ge=8, le=1000)] = 100
    """Most header fields in one request; more is answered 431 and the connection closed."""
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """A request's headers must arrive within this long of its first byte (or of the
    connection); else the connection is closed (408 when part of the request came)."""
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 15.0
    """A request body that sends nothing for this long is answered 408, connection closed."""
    max_json_depth: Annotated[int, msgspec.Meta(ge=2, le=256)] = 32
    """Deepest array/object nesting of a JSON body or WebSocket op; deeper is a 400 (an
    ``error`` message on a socket), never decoded."""

    # --- the operations dashboard (/ops; docs/operations.md) ---
    operators: str = ""
    """Comma-separated owners with the operator role: with auth on, only they may use /ops
    (a JWT may also carry `"roles": ["operator"]`)."""
    trace_ui_url: str = ""
    """Link to a trace in a trace UI, `{trace_id}` replaced, e.g.
    `http://127.0.0.1:16686/trace/{trace_id}` (Jaeger); "" shows no link."""
    sentry_ui_url: str = ""
    """Link to a Sentry event, `{event_id}` and `{trace_id}` replaced; "" shows no link."""
    browser_sentry_dsn: str = ""
    """Sentry DSN the browser pages report their errors to ("" = none)."""
    ops_heartbeat_s: Annotated[float, msgspec.Meta(ge=0.2, le=60)] = 2.0
    ops_buffer: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 200
    """Recent finished jobs and recent errors kept (each; shared by replicas through Redis)."""
    ops_spans: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 2_000
    """Spans of job traces kept for the dashboard's waterfall (0 = none; then without
    OTEL_EXPORTER_OTLP_ENDPOINT no spans are made at all)."""

    log_format: Annotated[str, msgspec.Meta(pattern="^(json|text)$")] = "json"

    # --- standard variables of the libraries (read here so nothing below reads os.environ) ---
    log_level: Annotated[str, msgspec.Meta(pattern="(?i)^(debug|info|warning|error|critical)$")] = (
        "INFO"
    )
    otel_exporter_otlp_traces_endpoint: str | None = None
    """Full URL of the OTLP/HTTP traces endpoint; wins over OTEL_EXPORTER_OTLP_ENDPOINT."""
    otel_sdk_disabled: bool = False
    sentry_release: str = ""
    """"" reports ``delineate@<version>``."""
    sentry_environment: str = ""
    """"" leaves Sentry's default (``production``)."""

    def __post_init__(self) -> None:
        if self.download_delay_min_ms > self.download_delay_max_ms:
            raise ValueError("DOWNLOAD_DELAY_MIN_MS must be <= DOWNLOAD_DELAY_MAX_MS")
        if self.cors_origins != "*" and not self.cors_origin_list:
            raise ValueError("CORS_ORIGINS must be `*` or comma-separated origins")
        self.public_base_url = self.public_base_url.rstrip("/")
        if not self.replica_id:
            self.replica_id = f"{socket.gethostname()}-{os.getpid()}"
        if self.redis_url:
            from delineate.redis.url import parse_redis_url

            parse_redis_url(self.redis_url)  # a malformed REDIS_URL stops start-up, clearly
        if self.auth_enabled and self.redis_url and not self.url_signing_secret:
            # Stream tokens (and local links) are signed with it and checked by any replica.
            raise ValueError("URL_SIGNING_SECRET must be set when auth is on and REDIS_URL is")
        if not self.url_signing_secret:
            self.url_signing_secret = secrets.token_urlsafe(32)
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 bytes (RFC 7518: HS256 keys)")
        for pair in self.api_key_pairs:
            if ":" not in pair or not all(part.strip() for part in pair.split(":", 1)):
                raise ValueError("API_KEYS must be comma-separated `owner:key` pairs")

    @property
    def api_key_pairs(self) -> list[str]:
        return [p.strip() for p in self.api_keys.split(",") if p.strip()]

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys.strip() or self.jwt_secret)

    @property
    def operator_list(self) -> frozenset[str]:
        return frozenset(o.strip() for o in self.operators.split(",") if o.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_list(self) -> list[str] | None:
        """None means every peer is trusted; [] (the default) that none is."""
        if self.trusted_proxies.strip() == "*":
            return None
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError.
        A secret may come from a file instead (``JWT_SECRET_FILE``: its content, stripped)."""
        environ = os.environ if environ is None else environ
        environ = {**environ, **read_secret_files(environ)}
        known = {f.encode_name: f for f in msgspec.structs.fields(cls)}
        raw: dict[str, str] = {}
        for name, field in known.items():
            value = environ.get(name)
            if value is None:
                continue
            # "" means unset for optional values, as in the original service.
            if value == "" and type(None) in typing.get_args(field.type):
                continue
            raw[name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"invalid setting: {exc}") from exc

    def replace(self, **changes: object) -> Settings:
        return msgspec.structs.replace(self, **changes)


SECRETS = ("JWT_SECRET", "API_KEYS", "S3_SECRET_ACCESS_KEY", "URL_SIGNING_SECRET")
"""Settings that may be read from ``<NAME>_FILE`` (Docker and Kubernetes secrets)."""


def read_secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    """``{NAME: content}`` for each ``NAME_FILE`` set; both set, or an unreadable file, is an
    error (a secret silently taken from the wrong place is worse than not starting)."""
    values = {}
    for name in SECRETS:
        path = environ.get(f"{name}_FILE")
        if path is None:
            continue
        if name in environ:
            raise SettingsError(f"set {name} or {name}_FILE, not both")
        try:
            with open(path, encoding="utf-8") as file:
                values[name] = file.read().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
    return values


SHARED_PREFIXES = frozenset(
    {"HOST", "PORT", "DATA", "PUBLIC", "URL", "TRACE", "REQUEST", "LOG", "MAX", "CORS",
     "TRUSTED", "BROWSER", "CLOSE", "IDLE", "STREAM", "OTEL", "SENTRY", "HISTORY", "PROGRESS",
     "REPLICA", "SLOW", "OUTBOX", "OPERATORS"}
)  # fmt: skip
"""First words of settings that other software's variables share (``HOST``, ``DATA_DIR``'s
``DATA``, the SDKs' ``OTEL_*`` and ``SENTRY_*``): a variable starting with them is not
presumed to be ours."""
_PLATFORM = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_\w+)?)?)$")
"""Kubernetes's service links (``REDIS_SERVICE_HOST``, ``REDIS_PORT_6379_TCP``...)."""


def warned_prefixes() -> frozenset[str]:
    """``DELINEATE_`` and the first word of every setting's name other software does not share
    (``REDIS_``, ``S3_``, ``JOB_``...): where a misspelt setting lands."""
    words = {f.encode_name.split("_", 1)[0] for f in msgspec.structs.fields(Settings)}
    return frozenset(f"{w}_" for w in (words - SHARED_PREFIXES) | {"DELINEATE"})


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(name, closest known name)`` for each variable with our prefixes that no setting
    reads: a misspelling (``REDIS_ULR``) would otherwise be silently ignored."""
    known = {f.encode_name for f in msgspec.structs.fields(Settings)}
    known |= {f"{name}_FILE" for name in SECRETS}
    prefixes = tuple(warned_prefixes())
    found = []
    for name in sorted(environ):
        if name in known or not name.startswith(prefixes) or _PLATFORM.search(name):
            continue
        bare = name.removeprefix("DELINEATE_")  # DELINEATE_PORT means PORT
        closest = max(known, key=lambda k: difflib.SequenceMatcher(None, bare, k).ratio())
        found.append((name, closest))
    return found

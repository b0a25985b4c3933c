"""Every tunable of the server, read once from the environment at start-up.

Field names are the environment variable names (``rename="upper"``). Nothing
below this module reads ``os.environ``: the app factory takes a ``Settings``.
"""

from __future__ import annotations

import os
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
    trusted_proxies: str = "*"
    """Peers whose X-Forwarded-For / X-Real-IP the rate limiter believes: `*` (the original's
    behaviour) or comma-separated addresses, e.g. the nginx in front."""
    download_delay_enabled: bool = True
    download_delay_min_ms: Milliseconds = 10_000
    download_delay_max_ms: Milliseconds = 200_000

    # --- scale-out ---
    replica_id: str = ""
    """Names this process in job documents and telemetry; "" gives <hostname>-<pid>."""
    redis_url: str | None = None
    """redis://host:port/db: shared broker and job store for several replicas ("" = embedded)."""
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
    public_base_url: str = ""
    """Prefix for download links the local store signs; "" gives root-relative links."""
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

    idle_socket_timeout_s: Seconds = 30.0
    """A multiplexed socket that follows no job for this long is closed (4408)."""
    slow_consumer_deadline_s: Seconds = 10.0
    """A connection whose outbox stays full this long is closed (1013; resume with since)."""

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

    log_format: Annotated[str, msgspec.Meta(pattern="^(json|text)$")] = "json"

    def __post_init__(self) -> None:
        if self.download_delay_min_ms > self.download_delay_max_ms:
            raise ValueError("DOWNLOAD_DELAY_MIN_MS must be <= DOWNLOAD_DELAY_MAX_MS")
        if self.cors_origins != "*" and not self.cors_origin_list:
            raise ValueError("CORS_ORIGINS must be `*` or comma-separated origins")
        if not self.replica_id:
            self.replica_id = f"{socket.gethostname()}-{os.getpid()}"
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
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_list(self) -> list[str] | None:
        """None means every peer is trusted."""
        if self.trusted_proxies.strip() == "*":
            return None
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise SettingsError."""
        environ = os.environ if environ is None else environ
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

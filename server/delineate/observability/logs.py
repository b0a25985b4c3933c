"""Structured logs: one JSON object per line (or readable text for `make run`), with the ids
of the request, trace and job in effect, taken from context variables."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from urllib.parse import unquote_plus

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
span_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("span_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

IDS = (
    ("request_id", request_id_var),
    ("trace_id", trace_id_var),
    ("span_id", span_id_var),
    ("job_id", job_id_var),
)


class ContextFilter(logging.Filter):
    """Stamps every record with the ids in context (explicit ``extra=`` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in IDS:
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JSONFormatter(logging.Formatter):
    FIELDS = (
        "request_id",
        "trace_id",
        "span_id",
        "job_id",
        "method",
        "path",
        "status",
        "duration_ms",
        "replica",
    )

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s%(ids)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [f"{n}={getattr(record, n)}" for n, _ in IDS if getattr(record, n, None)]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


SECRET_PARAMS = frozenset({"token", "X-Amz-Signature", "X-Amz-Credential", "sig"})
"""Query parameters that are credentials: stream tokens, link signatures."""
_PARAM = re.compile(r"(?:^|(?<=[?&]))([^=&?\s\"']+)=[^&\s\"']*")


def redact(text: str) -> str:
    """Blank the values of query parameters that are credentials (stream tokens, link
    signatures). uvicorn logs WebSocket handshakes with their query string. A key is judged
    as the server reads it, percent-decoded: ``tok%65n=`` is ``token=``."""
    return _PARAM.sub(_redact_param, text) if "=" in text else text


def _redact_param(match: re.Match[str]) -> str:
    key = match.group(1)
    if unquote_plus(key) in SECRET_PARAMS:
        return f"{key}=[redacted]"
    return match.group(0)


class RepeatedOpenFilter(logging.Filter):
    """Drops the WebSocket library's "connection open": uvicorn's ``"WebSocket <path>"
    [accepted]`` line just before it says the same with the path and client, and a replica
    whose sockets reconnect at once writes one line fewer per socket."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "connection open"


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        return True


def configure(log_format: str, level: int | str = logging.INFO) -> None:
    """Route every logger (ours, uvicorn's) through one handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RepeatedOpenFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(RepeatedOpenFilter())

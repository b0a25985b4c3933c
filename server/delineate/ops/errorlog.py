"""Every error the replica logs (a request's unhandled exception, a job's crash, a failed
background task) as an ``ErrorEntry`` for the dashboard, with the ids in context."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from delineate.observability import logs, tracing
from delineate.ops.records import ErrorEntry

OWN_LOGGER = "delineate.ops"
"""The dashboard's own complaints (Redis away) stay out of its log, and at warning level."""


class ErrorLog(logging.Handler):
    def __init__(self, replica: str, sink: Callable[[ErrorEntry], None]) -> None:
        super().__init__(logging.ERROR)
        self.replica, self.sink = replica, sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(OWN_LOGGER):
            return
        ids = {name: getattr(record, name, None) or var.get() for name, var in logs.IDS}
        # A job's lines carry no request context; its span (job.run) names the trace.
        ids["trace_id"] = ids["trace_id"] or tracing.current_trace_id()
        exception = None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            exception = f"{type(exc).__name__}: {exc}"[:500]
        kind = "job" if ids["job_id"] else "request" if ids["request_id"] else "log"
        self.sink(
            ErrorEntry(
                id=uuid.uuid4().hex,
                ts=record.created or time.time(),
                replica=self.replica,
                kind=kind,
                logger=record.name,
                message=logs.redact(record.getMessage())[:1000],
                exception=exception,
                request_id=ids["request_id"],
                job_id=ids["job_id"],
                trace_id=ids["trace_id"],
            )
        )

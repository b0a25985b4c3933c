"""Without a trace exporter, the dashboard's provider records job work, never reads."""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind

from delineate.observability.tracing import NoReads


def test_reads_and_sockets_stay_unrecorded_job_work_is_recorded() -> None:
    """A socket's or a poll's server span would be held for nothing the dashboard shows."""
    sampler = NoReads()
    for name in ("GET", "WS", "HEAD", "OPTIONS"):
        assert sampler.should_sample(None, 1, name, SpanKind.SERVER).decision is Decision.DROP
    for name, kind in (("POST", SpanKind.SERVER), ("job.run", SpanKind.INTERNAL)):
        decision = sampler.should_sample(None, 1, name, kind).decision
        assert decision is Decision.RECORD_AND_SAMPLE

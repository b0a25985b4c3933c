"""OpenTelemetry tracing, configured from OTEL_EXPORTER_OTLP_ENDPOINT.

With an endpoint, spans go out over OTLP/HTTP in batches. Without one, no provider is
installed and the API's no-op tracer costs next to nothing. A job keeps the W3C
``traceparent`` of the request that created it, so its execution span joins that trace
whichever replica runs it, also after a crash.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

TRACER_NAME = "delineate"
VERSION = "1.0.0"

_provider: TracerProvider | None = None


def setup(endpoint: str | None, replica_id: str) -> None:
    """Install a tracer provider when there is somewhere to send spans."""
    global _provider
    if _provider is not None or endpoint is None:
        return
    resource = Resource.create(
        {"service.name": "delineate", "service.version": VERSION, "service.instance.id": replica_id}
    )
    provider = TracerProvider(resource=resource)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown() -> None:
    """Flush pending spans (SIGTERM: telemetry is not lost on a graceful stop)."""
    if _provider is not None:
        _provider.force_flush(5_000)
        _provider.shutdown()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, VERSION)


def extract(headers: Mapping[str, str]) -> Context:
    return propagate.extract(dict(headers))


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (None without a recording span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context | None:
    return None if not traceparent else propagate.extract({"traceparent": traceparent})


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a traceparent."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None

"""OpenTelemetry tracing, configured from the standard ``OTEL_*`` variables.

With an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT), spans go out over
OTLP/HTTP in batches; the SDK reads the exporter's other variables (headers, timeout,
compression), the sampler's and the batch processor's itself, and OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES win over this module's defaults. Without one, no provider is
installed and the API's no-op tracer costs next to nothing, unless the operations
dashboard keeps spans (``keep_spans``): then the provider has no exporter, only the
listeners, and records only what the dashboard keeps (reads stay no-op spans). A job keeps
the W3C ``traceparent`` of the request that created it, so its execution span joins that
trace whichever replica runs it, also after a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

TRACER_NAME = "delineate"
VERSION = "1.0.0"

_provider: TracerProvider | None = None
_exporting: BatchSpanProcessor | None = None
SpanListener = Callable[[ReadableSpan], None]
_listeners: list[SpanListener] = []


class _Tap(SpanProcessor):
    """Hands every ended span to the listeners (the dashboard's span buffer)."""

    def on_end(self, span: ReadableSpan) -> None:
        for listener in _listeners:
            listener(span)


class NoReads(Sampler):
    """Records every span but the server spans of reads: status polls, event streams and
    sockets (a socket's span lives as long as the socket; thousands of them would each hold
    a recording span for nothing the dashboard shows)."""

    READS = frozenset({"GET", "HEAD", "OPTIONS", "WS"})

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: trace.SpanKind | None = None, attributes: Any = None,
                      links: Any = None, trace_state: Any = None) -> SamplingResult:  # fmt: skip
        if kind is trace.SpanKind.SERVER and name in self.READS:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoReads"


def setup(exporting: bool, replica_id: str, *, keep_spans: bool = False) -> None:
    """Install a tracer provider when there is somewhere to send spans or keep them.
    ``exporting``: an OTLP endpoint is configured (the exporter reads it from the environment)."""
    global _provider, _exporting
    if _provider is not None or (not exporting and not keep_spans):
        return
    # Without a sampler the SDK reads OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(
        resource=resource(replica_id), sampler=None if exporting else NoReads()
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _exporting = BatchSpanProcessor(OTLPSpanExporter())
        provider.add_span_processor(_exporting)
    provider.add_span_processor(_Tap())
    trace.set_tracer_provider(provider)
    _provider = provider


def resource(replica_id: str) -> Resource:
    """This service's defaults under what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES say
    (``Resource.create`` lets its argument win over them, so they are folded in first)."""
    defaults = {"service.name": TRACER_NAME, "service.version": VERSION,
                "service.instance.id": replica_id}  # fmt: skip
    from_env = OTELResourceDetector().detect().attributes
    return Resource.create({**defaults, **from_env})


def listen(listener: SpanListener) -> Callable[[], None]:
    """Call ``listener`` with every span this process ends; returns the undo."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def export(spans: list[ReadableSpan]) -> bool:
    """Send spans made elsewhere (the browser's) out with this replica's; False: no exporter."""
    if _exporting is None:
        return False
    for span in spans:
        _exporting.on_end(span)
    return True


def shutdown() -> None:
    """Flush pending spans (SIGTERM: telemetry is not lost on a graceful stop)."""
    if _provider is not None:
        _provider.force_flush(5_000)
        _provider.shutdown()


@functools.cache
def tracer() -> trace.Tracer:
    # One: the SDK builds a Tracer per get_tracer call, and every request and socket needs
    # one (a proxy got before configure() delegates to the provider set later).
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


def current_span_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None

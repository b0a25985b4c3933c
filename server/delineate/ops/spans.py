"""Spans for the dashboard's waterfall: which of the server's spans to keep, and the
browser's spans (OTLP/HTTP JSON, the format any collector accepts) checked and converted.

Kept: the spans of job traces (``job.*``, ``storage.*``, the requests that create or cancel
a job) and any span that ended in error; the rest (status polls, health, metrics) would
crowd them out of a bounded buffer.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from delineate.errors import BadRequest
from delineate.ops.records import Attribute, SpanRecord

KEPT_PREFIXES = ("job.", "storage.")
KEPT_ROUTES = frozenset({"/v1/download/initiate", "/v1/download/cancel/{job_id}"})
BROWSER_SERVICE = "delineate-web"
MAX_BROWSER_SPANS = 64
_TRACE_ID = re.compile(r"^(?!0{32})[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^(?!0{16})[0-9a-f]{16}$")


def kept(span: ReadableSpan) -> bool:
    if span.name.startswith(KEPT_PREFIXES):
        return True
    if span.status.status_code is StatusCode.ERROR:
        return True
    return (span.attributes or {}).get("http.route") in KEPT_ROUTES


def record_of(span: ReadableSpan) -> SpanRecord:
    context, parent = span.context, span.parent
    assert context is not None  # an SDK span always has one
    resource = span.resource.attributes
    attributes = {
        k: v for k, v in (span.attributes or {}).items() if isinstance(v, str | int | float | bool)
    }
    return SpanRecord(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_id=format(parent.span_id, "016x") if parent else None,
        name=span.name,
        service=str(resource.get("service.name", "")),
        replica=str(resource.get("service.instance.id", "")) or None,
        start_ms=(span.start_time or 0) / 1e6,
        end_ms=(span.end_time or span.start_time or 0) / 1e6,
        error=span.status.status_code is StatusCode.ERROR,
        attributes=attributes,
    )


# --- the browser's spans: a strict subset of OTLP/HTTP JSON -----------------------------------

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Nanos = (
    Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    | Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,19}$")]
)
"""OTLP JSON writes 64-bit integers as strings (JavaScript numbers cannot hold them)."""
IntValue = (
    Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]{1,18}$")]
)
TraceId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{16}$")]


class AnyValue(msgspec.Struct, rename="camel"):
    string_value: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    int_value: IntValue | None = None
    double_value: float | None = None
    bool_value: bool | None = None

    def value(self) -> Attribute | None:
        if self.int_value is not None:
            return int(self.int_value)
        for value in (self.string_value, self.double_value, self.bool_value):
            if value is not None:
                return value
        return None


class KeyValue(msgspec.Struct):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    value: AnyValue


class OtlpStatus(msgspec.Struct):
    code: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0


class OtlpSpan(msgspec.Struct, rename="camel"):
    trace_id: TraceId
    span_id: SpanId
    name: Name
    start_time_unix_nano: Nanos
    end_time_unix_nano: Nanos
    parent_span_id: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{16})?$")] = ""
    attributes: Annotated[list[KeyValue], msgspec.Meta(max_length=16)] = []
    status: OtlpStatus = msgspec.field(default_factory=OtlpStatus)


class ScopeSpans(msgspec.Struct):
    spans: Annotated[list[OtlpSpan], msgspec.Meta(max_length=MAX_BROWSER_SPANS)]


class ResourceSpans(msgspec.Struct, rename="camel"):
    scope_spans: Annotated[list[ScopeSpans], msgspec.Meta(max_length=4)]


class ExportRequest(msgspec.Struct, rename="camel"):
    resource_spans: Annotated[list[ResourceSpans], msgspec.Meta(max_length=4)]


class PartialSuccess(msgspec.Struct, rename="camel"):
    rejected_spans: int
    error_message: str


class ExportResponse(msgspec.Struct, rename="camel", omit_defaults=True):
    """OTLP/HTTP's answer: ``{}``, or which spans were rejected and why."""

    partial_success: PartialSuccess | None = None


def _number(literal: str) -> int | float:
    """JSON has one number type: 5.0 is the integer 5 (as JSON Schema says)."""
    value = float(literal)
    return int(value) if value.is_integer() else value


_decode_json = msgspec.json.Decoder(float_hook=_number).decode


def _decode_export(body: bytes) -> ExportRequest:
    return msgspec.convert(_decode_json(body), ExportRequest)


def browser_spans(body: bytes) -> tuple[list[SpanRecord], ExportResponse]:
    """The spans of an OTLP/HTTP JSON export from a browser page, and the answer (which
    spans were rejected: all-zero ids, ending before they start, beyond the first
    MAX_BROWSER_SPANS); 400 when the body is not such an export.

    Whatever the page says its service is, the spans are the browser's (``delineate-web``):
    a page cannot pass its spans off as a replica's."""
    try:
        request = _decode_export(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"not an OTLP/HTTP JSON trace export: {exc}") from exc
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    accepted = [_record(s) for s in spans[:MAX_BROWSER_SPANS] if _valid(s)]
    rejected = len(spans) - len(accepted)
    if not rejected:
        return accepted, ExportResponse()
    why = (
        f"ids must not be all zero, a span cannot end before it starts, at most {MAX_BROWSER_SPANS}"
    )
    return accepted, ExportResponse(PartialSuccess(rejected_spans=rejected, error_message=why))


def _valid(span: OtlpSpan) -> bool:
    return (
        _TRACE_ID.match(span.trace_id) is not None
        and _SPAN_ID.match(span.span_id) is not None
        and (not span.parent_span_id or _SPAN_ID.match(span.parent_span_id) is not None)
        and int(span.end_time_unix_nano) >= int(span.start_time_unix_nano)
    )


def _record(span: OtlpSpan) -> SpanRecord:
    start, end = int(span.start_time_unix_nano), int(span.end_time_unix_nano)
    attributes = {kv.key: v for kv in span.attributes if (v := kv.value.value()) is not None}
    return SpanRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_id=span.parent_span_id or None,
        name=span.name,
        service=BROWSER_SERVICE,
        replica=None,
        start_ms=start / 1e6,
        end_ms=end / 1e6,
        error=span.status.code == StatusCode.ERROR.value,
        attributes=attributes,
    )


_BROWSER = Resource.create({"service.name": BROWSER_SERVICE})
_SCOPE = InstrumentationScope(BROWSER_SERVICE)


def readable(record: SpanRecord) -> ReadableSpan:
    """A browser span as the SDK's exporters take it (sent on with the replica's own)."""
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(int(record.trace_id, 16), int(record.span_id, 16), True, flags)
    parent = None
    if record.parent_id:
        parent = SpanContext(int(record.trace_id, 16), int(record.parent_id, 16), True, flags)
    return ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=_BROWSER,
        attributes=record.attributes,
        kind=SpanKind.CLIENT,
        status=Status(StatusCode.ERROR if record.error else StatusCode.UNSET),
        start_time=int(record.start_ms * 1e6),
        end_time=int(record.end_ms * 1e6),
        instrumentation_scope=_SCOPE,
    )

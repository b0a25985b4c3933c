"""Browser spans: a strict subset of OTLP/HTTP JSON, checked before a replica relays it."""

from __future__ import annotations

import json

import pytest

from delineate.errors import BadRequest
from delineate.ops.spans import BROWSER_SERVICE, browser_spans, readable

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def export(**span: object) -> bytes:
    body = {"traceId": TRACE, "spanId": SPAN, "name": "click Start download",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000250000000",
            "attributes": [{"key": "url.path", "value": {"stringValue": "/v1/download/initiate"}},
                           {"key": "http.response.status_code", "value": {"intValue": "202"}}],
            **span}  # fmt: skip
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "delineate"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [body]}]}]}
    ).encode()


def test_a_browser_span_is_read_as_the_browsers_whatever_it_claims() -> None:
    """Times, attributes and ids come through; the service is always the browser's."""
    (span,), answer = browser_spans(export())
    assert answer.partial_success is None
    assert (span.trace_id, span.span_id, span.parent_id) == (TRACE, SPAN, None)
    assert span.end_ms - span.start_ms == pytest.approx(250)
    assert span.attributes == {
        "url.path": "/v1/download/initiate",
        "http.response.status_code": 202,
    }
    assert span.service == BROWSER_SERVICE
    sdk_span = readable(span)
    assert sdk_span.resource.attributes["service.name"] == BROWSER_SERVICE
    assert sdk_span.context is not None
    assert format(sdk_span.context.trace_id, "032x") == TRACE


@pytest.mark.parametrize(
    "change",
    [{"spanId": "XYZ"}, {"parentSpanId": "123"}, {"name": ""}, {"startTimeUnixNano": "-5"}],
)
def test_malformed_exports_are_refused(change: dict[str, object]) -> None:
    """Ids that are not hex of the right length, an empty name, a negative time: 400."""
    with pytest.raises(BadRequest):
        browser_spans(export(**change))


@pytest.mark.parametrize("change", [{"traceId": "0" * 32}, {"endTimeUnixNano": "1"}])
def test_invalid_spans_are_rejected_as_otlp_says(change: dict[str, object]) -> None:
    """A well-formed span OpenTelemetry cannot take (all-zero ids, ending before it starts)
    is dropped and counted in ``partialSuccess``, not a 400 for the whole export."""
    accepted, answer = browser_spans(export(**change))
    assert accepted == []
    assert answer.partial_success is not None
    assert answer.partial_success.rejected_spans == 1


def test_not_json_is_refused() -> None:
    with pytest.raises(BadRequest):
        browser_spans(b"{")

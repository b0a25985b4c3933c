"""Receivers for telemetry in tests: an OTLP/HTTP trace collector and a Sentry endpoint.

Both are real HTTP servers on loopback that the replicas export to, as they would in
production; they keep what they receive for the test to inspect.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        encoding = self.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        with self.server.lock:
            self.server.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


class SpanCollector(_Receiver):
    """An OTLP/HTTP endpoint (protobuf) for OTEL_EXPORTER_OTLP_ENDPOINT."""

    def spans(self) -> list[dict[str, Any]]:
        found = []
        with self.lock:
            bodies = list(self.bodies)
        for _, body in bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "replica": resource.get("service.instance.id"),
                            "service": resource.get("service.name"),
                            "resource": resource,
                            "status": span.status.code,  # 2 = error (OTLP's STATUS_CODE_ERROR)
                            "attributes": {a.key: a.value for a in span.attributes},
                        })  # fmt: skip
        return found


class SentryServer(_Receiver):
    """Accepts Sentry envelopes; ``dsn`` points a replica's SENTRY_DSN here."""

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict[str, Any]]:
        events = []
        with self.lock:
            bodies = list(self.bodies)
        for _, body in bodies:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if header and json.loads(header).get("type") == "event":
                    events.append(json.loads(payload))
        return events

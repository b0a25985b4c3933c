"""What every real-time connection records: the connection gauge, frames sent, fan-out delay,
slow-consumer events, and its frame count on the connection's span. One object per
connection, shared by WS and SSE."""

from __future__ import annotations

import time

from opentelemetry import trace

from delineate.observability.metrics import Metrics
from delineate.realtime.outbox import Outbox, Outgoing


class Session:
    def __init__(self, metrics: Metrics, transport: str, outbox: Outbox) -> None:
        self.metrics, self.transport, self.outbox = metrics, transport, outbox
        self.frames = 0
        self._record = metrics.delivery.record

    def sent(self, item: Outgoing) -> None:
        self.frames += 1
        self._record(item.type, max(0.0, time.time() - item.ts / 1000) if item.ts else None)

    def start(self) -> None:
        self.metrics.connections.labels(self.transport).inc()

    def finish(self) -> None:
        """The connection ended: gauges, slow-consumer counters, and the frame count on the
        request's span (the Telemetry middleware's span covers the whole connection)."""
        self.metrics.connections.labels(self.transport).dec()
        span = trace.get_current_span()
        span.set_attribute("realtime.transport", self.transport)
        span.set_attribute("frames.sent", self.frames)
        self._slow_consumer_events()

    def _slow_consumer_events(self) -> None:
        if self.outbox.coalesced:
            self.metrics.slow_consumer.labels("coalesced").inc(self.outbox.coalesced)
        if self.outbox.overflowed:
            self.metrics.slow_consumer.labels("disconnected").inc()

"""What every real-time connection records: its span, the connection gauge, frames sent,
fan-out delay and slow-consumer events. One object per connection, shared by WS and SSE."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from opentelemetry import trace

from server.observability import tracing
from server.observability.metrics import Metrics
from server.realtime.outbox import Outbox, Outgoing


class Session:
    def __init__(self, metrics: Metrics, transport: str, outbox: Outbox) -> None:
        self.metrics, self.transport, self.outbox = metrics, transport, outbox
        self.frames = 0
        self._delay = metrics.fanout_delay

    def sent(self, item: Outgoing) -> None:
        self.frames += 1
        self.metrics.frames_sent_of(item.type).inc()
        if item.ts:
            self._delay.observe(max(0.0, time.time() - item.ts / 1000))

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[trace.Span]:
        gauge = self.metrics.connections.labels(self.transport)
        gauge.inc()
        with tracing.tracer().start_as_current_span(name) as span:
            try:
                yield span
            finally:
                gauge.dec()
                span.set_attribute("frames.sent", self.frames)
                self._slow_consumer_events()

    def _slow_consumer_events(self) -> None:
        if self.outbox.coalesced:
            self.metrics.slow_consumer.labels("coalesced").inc(self.outbox.coalesced)
        if self.outbox.overflowed:
            self.metrics.slow_consumer.labels("disconnected").inc()

"""The HTTP limits a replica holds itself, inside uvicorn's httptools protocol.

A replica is reachable without nginx (compose, Kubernetes services, ``make run``), and
uvicorn's httptools protocol has no limit of its own on a request's head or body, and no
timeout until the headers are complete: it hands the app every body byte it is sent.
``LimitedHttpProtocol`` (the ``http`` protocol ``delineate serve`` gives uvicorn) adds them:

- request line + headers over MAX_HEADER_BYTES, or more than MAX_HEADER_COUNT fields: 431;
- a Content-Length over MAX_BODY_BYTES: 413 before a byte of the body is read; a chunked
  body that grows past it: 413 as soon as it does (the app, already running, sees a
  disconnect and its answer goes nowhere);
- headers not complete HEADER_TIMEOUT_S after the request's first byte (or after the
  connection opened): 408 (nothing, when no byte came) and the connection closed;
- a body that sends nothing for BODY_TIMEOUT_S: 408;
- a response that starts before the request's body has all arrived (a 401, a 504) closes the
  connection after it (``connection: close``): the rest of that body is never read.

After a refusal the connection stops parsing, half-closes and drains (discards) what the
client still sends for ``LINGER_S``: closing a socket with unread bytes resets it, and the
client could lose the answer before reading it.

This is the one module that touches uvicorn's private HTTP parts (``delineate.wire``
holds the WebSocket and streaming-write ones). Written against uvicorn 0.54 with httptools
0.9: it relies on ``HttpToolsProtocol``'s parser callbacks (``on_message_begin``,
``on_header``, ``on_headers_complete``, ``on_body``, ``on_message_complete``), its
``cycle``, ``headers``, ``flow``, ``transport``, ``loop`` and ``server_state`` attributes,
and the ``RequestResponseCycle``'s ``keep_alive``, ``response_started``,
``response_complete``, ``disconnected``, ``message_event`` and ``scope``.
``tests/server/uvicorn_ext/test_http.py`` fails outside ``SUPPORTED_UVICORN``, so an upgrade is
re-read against this list first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import msgspec
from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from delineate.http.edge import request_id_from
from delineate.http.responses import error_body
from delineate.settings import Settings

"""uvicorn versions (from, to exclusive) this module was written and tested against."""
LINGER_S = 2.0
log = logging.getLogger("delineate.http")


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_body_bytes: int
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
        )


def limited_http_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``, holding ``limits``."""
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, or None (absent or malformed: httptools judges it)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


def head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The bytes of a request's target and header lines (``name: value\r\n`` each)."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]
    # Slots: an event stream keeps its protocol object for hours, thousands at once.
    __slots__ = (
        "_began", "_body_bytes", "_body_pending", "_body_seen", "_body_timer", "_head_bytes",
        "_head_count", "_head_timer", "_in_head", "_keep_alive", "_linger", "_refused",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers (or waiting for one)
        self._began = False  # a byte of the current request has arrived
        self._head_bytes = self._head_count = self._body_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._body_pending = False  # the app runs and the request's body is still arriving
        self._keep_alive = True  # the request's own keep-alive, restored once its body is in
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # --- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining after a refusal
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Every byte so far belongs to the head while it is still being read (a request that
        # follows another in the same read is counted from the next read on).
        if self._in_head and not self._refused and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, "the request's headers are too large")

    def handle_websocket_upgrade(self) -> None:
        if not self._refused:  # the parser reports an upgrade even after a refused head
            super().handle_websocket_upgrade()
            # The parser holds this object's bound methods, a cycle only the collector would
            # free: a burst of handshakes would leave thousands for one long collection.
            del self.parser

    # --- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._began, self._head_count = True, 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._head_count += 1
        if self._head_count > self.limits.max_header_count:
            self._refuse(431, "the request has too many header fields")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        if self._refused:
            return
        if head_size(self.url, self.headers) > self.limits.max_header_bytes:
            self._refuse(431, "the request's headers are too large")  # all in one read
            return
        length = declared_length(self.headers)
        if length is not None and length > self.limits.max_body_bytes:
            self._refuse(413, self._too_large())
            return
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # the app will answer it (not a WebSocket upgrade)
            self._body_pending, self._body_bytes = True, 0
            self._keep_alive, self.cycle.keep_alive = self.cycle.keep_alive, False
            self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._refuse(413, self._too_large())
            return
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._body_pending:
            self._body_pending = False
            self._cancel_body_timer()
            if not self.cycle.response_started:
                self.cycle.keep_alive = self._keep_alive
        self._in_head, self._began, self._head_bytes = True, False, 0
        super().on_message_complete()

    # --- timers ------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            timeout = self.limits.header_timeout_s
            self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._began:
            self.transport.close()  # a connection that never sent a byte: nothing to answer
            return
        self._refuse(408, "the request's headers did not arrive in time")

    def _arm_body_timer(self) -> None:
        self._body_seen = self.loop.time()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_check)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        """Re-armed while the body arrives; a pause that is ours (the app is not reading, a
        pipelined request waits its turn, or the client waits for our 100 Continue) does not
        count."""
        now = self.loop.time()
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            self._body_seen = now
        left = self._body_seen + self.limits.body_timeout_s - now
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._body_check)
            return
        self._body_timer = None
        self._refuse(408, "the request body stopped arriving")

    # --- refusing ----------------------------------------------------------------------

    def _too_large(self) -> str:
        return f"the request body is larger than {self.limits.max_body_bytes} bytes"

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless another answer is under way), stop reading the request,
        and close the connection once the client has had time to read the answer."""
        self._refused = True
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self.transport.is_closing():
            return
        client = self.client[0] if self.client else "unknown"
        log.warning("refused a request from %s: %d %s", client, status, message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or not self._body_pending:
                # An answer (or an earlier pipelined request's) is being written: cut it.
                self.transport.close()
                return
            # The app is reading this body: it sees a disconnect, and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(self._answer(status, message))
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_S, self.transport.close)

    def _answer(self, status: int, message: str) -> bytes:
        request_id = request_id_from(Headers(raw=self.headers or []))
        if self._body_pending:
            request_id = self.cycle.scope["state"].get("request_id", request_id)
        body = error_body(status, message, request_id)
        head = [STATUS_LINE[status]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
        ]
        head.extend(b"%s: %s\r\n" % pair for pair in headers)
        return b"".join([*head, b"\r\n", body])

"""The parts of uvicorn that ``delineate.uvicorn_ext.http`` relies on are where it expects them."""

import asyncio
import gc
import inspect
from typing import Any

import httpx
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from websockets.asyncio.client import connect
from websockets.protocol import State

from delineate.settings import Settings
from delineate.uvicorn_ext.http import (
    HttpLimits,
    declared_length,
    head_size,
    limited_http_protocol,
)
from tests.support.inprocess import serving


def test_the_hooks_and_attributes_exist() -> None:
    """Parser callbacks overridden, and the cycle and flow state read or set."""
    for name in (
        "connection_made", "connection_lost", "data_received", "handle_websocket_upgrade",
        "on_message_begin", "on_header", "on_headers_complete", "on_body",
        "on_message_complete",
    ):  # fmt: skip
        assert callable(getattr(HttpToolsProtocol, name)), name
    cycle_init = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in (
        "keep_alive", "response_started", "response_complete", "disconnected",
        "message_event", "scope", "waiting_for_100_continue",
    ):  # fmt: skip
        assert f"self.{attribute} =" in cycle_init, attribute
    assert "self.read_paused =" in inspect.getsource(FlowControl.__init__)
    protocol_init = inspect.getsource(HttpToolsProtocol.__init__)
    for attribute in ("cycle", "headers", "flow", "transport", "loop", "server_state"):
        assert f"self.{attribute}" in protocol_init, attribute


def test_the_protocol_class_carries_the_settings() -> None:
    limits = HttpLimits.from_settings(Settings.from_env({"MAX_BODY_BYTES": "2048"}))
    protocol = limited_http_protocol(limits)
    assert issubclass(protocol, HttpToolsProtocol)
    assert protocol.limits.max_body_bytes == 2048


def test_declared_length_leaves_malformed_values_to_the_parser() -> None:
    """A Content-Length is read only when it is digits; httptools refuses the rest (400)."""
    assert declared_length([(b"host", b"x"), (b"content-length", b"2048")]) == 2048
    assert declared_length([(b"content-length", b"-1")]) is None
    assert declared_length([(b"content-length", b"1e9")]) is None
    assert declared_length([(b"transfer-encoding", b"chunked")]) is None


def test_head_size_counts_the_target_and_every_header_line() -> None:
    assert head_size(b"/v1/ws?x=1", [(b"host", b"a"), (b"x", b"yz")]) == 10 + 9 + 7


async def test_an_upgraded_connection_leaves_no_cycle_for_the_collector() -> None:
    """After the upgrade to WebSocket nothing refers to the HTTP protocol object any more:
    reference counting frees it at once. (Left in a cycle, each handshake is garbage that
    waits for the cyclic collector, and a burst of thousands makes a long collection.)"""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await receive()  # until the client closes

    protocol_class = limited_http_protocol(HttpLimits.from_settings(Settings.from_env({})))
    async with serving(app, http=protocol_class) as url:
        gc.collect()
        gc.disable()  # what is not freed by reference counting stays for the count below
        try:
            sockets = [await connect(url, compression=None) for _ in range(20)]
            assert all(ws.state is State.OPEN for ws in sockets)
            left = sum(isinstance(o, protocol_class) for o in gc.get_objects())
            for ws in sockets:
                await ws.close()
        finally:
            gc.enable()
    assert left == 0


async def test_a_closed_http_connection_leaves_no_cycle_for_the_collector() -> None:
    """While the app runs, uvicorn's protocol and the request's cycle refer to each other
    (the cycle's ``on_response`` is a method of the protocol); uvicorn drops that when the
    app returns, so a closed connection is freed by reference counting. Pinned because a
    served replica freezes what outlives a young collector pass (``delineate.gc_tuning``):
    a cycle left here would wait for the hourly sweep."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    protocol_class = limited_http_protocol(HttpLimits.from_settings(Settings.from_env({})))
    async with serving(app, http=protocol_class) as url:
        base = url.replace("ws://", "http://")
        gc.collect()
        gc.disable()  # what reference counting does not free stays for the count below
        try:
            for _ in range(10):  # one connection each, closed by the client
                async with httpx.AsyncClient() as http:
                    assert (await http.get(base)).status_code == 200
            async with asyncio.timeout(5):
                while any(isinstance(o, protocol_class) for o in gc.get_objects()):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            gc.enable()

"""Ready-made frames, and the parts of uvicorn the direct write relies on (a real uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from delineate.realtime.outbox import Outgoing
from delineate.uvicorn_ext.sockets import (
    DirectSocket,
    DirectStream,
    LeanWebSocketProtocol,
    direct_socket,
    direct_stream,
)
from delineate.wire import body_chunk, text_frame
from tests.support.inprocess import serving


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_is_what_websockets_would_send(length: int) -> None:
    payload = ("é" * length).encode()[:length]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_an_outgoing_message_is_framed_once() -> None:
    item = Outgoing("job", 3, "progress", '{"seq":3}')
    assert item.ws_frame == text_frame(b'{"seq":3}')
    assert item.ws_frame is item.ws_frame


Probe = Callable[[DirectSocket | None], Any]


@contextlib.asynccontextmanager
async def uvicorn_ws(
    probe: Probe, *, deflate: bool = False, ws: Any = "websockets-sansio"
) -> AsyncIterator[str]:
    """A real uvicorn (sans-I/O WebSockets) whose one route accepts, hands the connection's
    ``direct_socket`` to ``probe``, and then waits for the client to leave."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await probe(direct_socket(send))
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with serving(app, deflate=deflate, ws=ws) as url:
        yield url


async def test_direct_writes_reach_the_client_in_order_and_stop_after_close() -> None:
    written: list[bool] = []
    after_close: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    pollers: list[asyncio.Future[None]] = []

    async def probe(socket: DirectSocket | None) -> None:
        assert socket is not None, "uvicorn's sans-I/O protocol no longer offers a direct write"
        written.extend(socket.write(text_frame(f"frame {i}".encode())) for i in range(3))

        async def once_closed() -> None:
            # Polled: the point is that write() itself notices the closed connection.
            while socket.write(text_frame(b"late")):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            after_close.set_result(False)

        pollers.append(asyncio.ensure_future(once_closed()))

    async with uvicorn_ws(probe) as url:
        async with connect(url, compression=None) as client:
            received = [await client.recv() for _ in range(3)]
        assert await asyncio.wait_for(after_close, 5) is False
    assert written == [True, True, True]
    assert received == ["frame 0", "frame 1", "frame 2"]


async def test_no_direct_write_on_a_compressed_connection() -> None:
    seen: list[DirectSocket | None] = []

    async def probe(socket: DirectSocket | None) -> None:
        seen.append(socket)

    async with (
        uvicorn_ws(probe, deflate=True) as url,
        connect(url, compression="deflate") as client,
    ):
        await client.ping()
    assert seen == [None]


def test_no_direct_write_outside_uvicorn() -> None:
    async def send(message: Any) -> None: ...

    assert direct_socket(send) is None
    assert direct_socket(None) is None


async def test_the_lean_protocol_drops_the_handshake_and_still_speaks_websocket() -> None:
    """The server's protocol: after accept, no parsed request or response headers are kept;
    messages, keepalive pings, direct writes and the close handshake all work as uvicorn's."""
    kept: dict[str, Any] = {}

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        protocol = send.__self__
        kept.update(request=protocol.request, response=protocol.response)
        # Every attribute uvicorn set is in a slot: an upgrade that adds one shows here.
        kept["instance_dict"] = dict(vars(protocol))
        kept["direct"] = direct_socket(send) is not None
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"].upper()})
        kept["disconnect_code"] = message["code"]

    async with (
        serving(echo, ws=LeanWebSocketProtocol) as url,
        connect(url, compression=None, ping_interval=None) as client,
    ):
        for word in ("one", "two"):
            await client.send(word)
            assert await asyncio.wait_for(client.recv(), 5) == word.upper()
        await asyncio.sleep(0.2)  # several server keepalive pings, answered by the client
        await client.send("three")
        assert await asyncio.wait_for(client.recv(), 5) == "THREE"
        await client.close(1000)
    for _ in range(100):  # the app sees the disconnect a moment after the close handshake
        if "disconnect_code" in kept:
            break
        await asyncio.sleep(0.01)
    assert kept == {
        "request": None,
        "response": None,
        "instance_dict": {},
        "direct": True,
        "disconnect_code": 1000,
    }


async def accepted(receive: Any, send: Any) -> DirectSocket:
    """Accept the connection; its direct socket."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    socket = direct_socket(send)
    assert socket is not None
    return socket


@pytest.mark.parametrize("ws", ["websockets-sansio", LeanWebSocketProtocol])
async def test_a_direct_close_ends_the_connection_after_the_last_frame(ws: Any) -> None:
    """``close``: the client gets the last frame, then close 1000 with the reason; the app's
    next receive is the disconnect; nothing more is written directly, and a second close
    does nothing; the connection ends once the client answers the close."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        socket = await accepted(receive, send)
        seen["last"] = socket.write(text_frame(b"last"))
        seen["close"] = socket.close(1000, "job finished")
        seen["again"] = socket.close(1000, "job finished")
        seen["later"] = socket.write(text_frame(b"later"))
        seen["next_message"] = await receive()

    async with serving(app, ws=ws) as url:
        async with connect(url, compression=None) as client:
            assert await asyncio.wait_for(client.recv(), 5) == "last"
            await asyncio.wait_for(client.wait_closed(), 5)
        assert (client.close_code, client.close_reason) == (1000, "job finished")
    assert seen == {
        "last": True,
        "close": True,
        "again": False,
        "later": False,
        "next_message": {"type": "websocket.disconnect", "code": 1000, "reason": "job finished"},
    }


@pytest.mark.parametrize("ws", ["websockets-sansio", LeanWebSocketProtocol])
async def test_a_direct_close_after_the_client_closed_does_nothing(ws: Any) -> None:
    """A paced close can come after the client closed on its own (the SDK does, on the
    terminal frame): it finds the connection closing and leaves it to uvicorn."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        socket = await accepted(receive, send)
        seen["message"] = await receive()
        seen["close"] = socket.close(1000, "job finished")

    async with serving(app, ws=ws) as url:
        async with connect(url, compression=None) as client:
            await client.close(1001, "bye")
        assert client.close_code == 1001
    for _ in range(100):
        if "close" in seen:
            break
        await asyncio.sleep(0.01)
    assert seen == {
        "message": {"type": "websocket.disconnect", "code": 1001, "reason": "bye"},
        "close": False,
    }


def test_an_outgoing_event_is_framed_as_a_body_chunk_once() -> None:
    item = Outgoing("job", 3, "progress", '{"seq":3}')
    event = b'id: 3\nevent: progress\ndata: {"seq":3}\n\n'
    assert item.sse_chunk == b"%x\r\n" % len(event) + event + b"\r\n"
    assert item.sse_chunk is item.sse_chunk
    assert body_chunk(b"") == b"0\r\n\r\n"  # (what ends a body: never written directly)


async def test_direct_chunks_stream_between_asgi_ones_and_stop_once_the_response_ends() -> None:
    """An SSE response: ASGI starts it and writes the first event, direct chunks follow, ASGI
    ends it. The client reads one well-formed chunked body in order; after the end, and
    before the start, the direct write refuses."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        stream = direct_stream(send)
        assert stream is not None, "uvicorn's httptools cycle no longer offers a direct write"
        seen["before_start"] = stream.write(body_chunk(b"too early\n"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        seen["direct"] = [
            stream.write(body_chunk(f"{word}\n".encode())) for word in ("two", "three")
        ]
        await send({"type": "http.response.body", "body": b"four\n", "more_body": False})
        seen["after_end"] = stream.write(body_chunk(b"too late\n"))

    async with serving(app) as url, httpx.AsyncClient() as client:
        response = await client.get(url.replace("ws://", "http://"))
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "one\ntwo\nthree\nfour\n"
    assert seen == {"before_start": False, "direct": [True, True], "after_end": False}


async def test_no_direct_stream_under_h11_or_outside_uvicorn() -> None:
    seen: list[DirectStream | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(direct_stream(send))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serving(app, http="h11") as url, httpx.AsyncClient() as client:
        assert (await client.get(url.replace("ws://", "http://"))).status_code == 204
    assert seen == [None]
    assert direct_stream(None) is None

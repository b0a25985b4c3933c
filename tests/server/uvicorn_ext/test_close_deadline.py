"""Closes that end by a deadline (``wire.ClosingWebSocketProtocol``, ``DirectStream.end``),
against a real uvicorn in this process and clients that stop reading: the server's side of
each connection leaves the kernel, send queue and all."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from delineate.uvicorn_ext.sockets import (
    ClosingWebSocketProtocol,
    LeanWebSocketProtocol,
    closing_socket,
    direct_stream,
)
from delineate.wire import body_chunk, text_frame
from tests.support.processes import free_port
from tests.support.sockets import server_sockets, small_buffer_socket

DEADLINE_S = 0.5
BIG_FRAME = text_frame(b"x" * 65536)
BIG_CHUNK = body_chunk(b"x" * 65536)
MAX_WRITES = 1000  # 64 MiB: far more than a loopback socket's buffers take


@contextlib.asynccontextmanager
async def server(app: Any, **options: Any) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """``app`` in a real uvicorn (httptools, the server's WebSocket protocol with a short
    close deadline); stopped (a graceful shutdown) when the block ends, if still running."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", lifespan="off",
        ws=LeanWebSocketProtocol.closing_within(DEADLINE_S), log_level="warning", **options,
    )  # fmt: skip
    instance = uvicorn.Server(config)
    task = asyncio.ensure_future(instance.serve())
    try:
        while not instance.started:  # noqa: ASYNC110  (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
        yield instance, port
    finally:
        instance.should_exit = True
        await asyncio.wait_for(task, 10)


async def gone(port: int, peer: int) -> dict[int, tuple[str, int]]:
    """What the server's side of the connection from ``peer`` still is after up to 5 s."""
    remaining = server_sockets(port, {peer})
    for _ in range(50):
        if not remaining:
            break
        await asyncio.sleep(0.1)
        remaining = server_sockets(port, {peer})
    return remaining


async def accepted(receive: Any, send: Any) -> ClosingWebSocketProtocol:
    """Accept the WebSocket handshake; the connection's own protocol, for its close."""
    await receive()
    await send({"type": "websocket.accept"})
    protocol = closing_socket(send)
    assert protocol is not None
    return protocol


def fill(write: Any, writable: Any) -> int:
    """Write until the transport pauses (the client stopped reading); the writes made."""
    for count in range(MAX_WRITES):
        if not writable():
            return count
        write()
    raise AssertionError("the transport never paused")


async def stalled_websocket(port: int) -> tuple[Any, int]:
    """A WebSocket client that reads nothing after the handshake; and its port."""
    sock = small_buffer_socket(port)
    client = await connect(f"ws://127.0.0.1:{port}/", sock=sock, max_queue=1, ping_interval=None)
    return client, sock.getsockname()[1]


async def test_a_close_a_client_never_reads_is_reset_at_the_deadline() -> None:
    """1013 to a client that stopped reading: the close frame is written although the
    transport is paused, ``closed()`` returns once the connection is reset at the deadline,
    and the server's socket is gone from the kernel (not ESTABLISHED with megabytes queued)."""
    seen: dict[str, Any] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = await accepted(receive, send)
        seen["writes"] = fill(lambda: protocol.transport.write(BIG_FRAME), protocol.writable.is_set)
        seen["close"] = protocol.start_close(1013, "slow consumer")
        await protocol.closed()
        seen["disconnected"] = protocol.disconnected
        done.set_result(None)

    async with server(app) as (_, port):
        client, peer = await stalled_websocket(port)
        await asyncio.wait_for(done, 10)
        assert await gone(port, peer) == {}
        with contextlib.suppress(ConnectionClosed, OSError):
            await client.close()
    assert seen["writes"] > 0
    assert seen["close"] is True
    assert seen["disconnected"] is True


async def test_an_app_that_returns_without_closing_leaves_nothing_behind() -> None:
    """uvicorn closes the transport of an app that returned (here after an error) and would
    wait for the client forever; it is reset at the deadline."""
    returned: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = await accepted(receive, send)
        fill(lambda: protocol.transport.write(BIG_FRAME), protocol.writable.is_set)
        returned.set_result(None)

    async with server(app) as (_, port):
        client, peer = await stalled_websocket(port)
        await asyncio.wait_for(returned, 10)
        assert await gone(port, peer) == {}
        with contextlib.suppress(ConnectionClosed, OSError):
            await client.close()


async def test_a_close_the_client_answers_ends_cleanly() -> None:
    """A client that reads: it gets every frame, then the close with its code, and answers;
    ``closed()`` returns without waiting for the deadline's reset."""
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = await accepted(receive, send)
        await send({"type": "websocket.send", "text": "last"})
        protocol.start_close(1000, "job finished")
        await protocol.closed()
        closed.set_result(None)

    async with server(app) as (_, port):
        async with connect(f"ws://127.0.0.1:{port}/") as client:
            assert await asyncio.wait_for(client.recv(), 5) == "last"
            await asyncio.wait_for(client.wait_closed(), 5)
        assert (client.close_code, client.close_reason) == (1000, "job finished")
        await asyncio.wait_for(closed, 5)


async def test_a_drain_closes_with_1012_and_resets_clients_that_do_not_answer() -> None:
    """Shutdown: every socket gets 1012; one that reads answers and ends cleanly; one that
    stopped reading is reset at the deadline, so the server stops (uvicorn's own shutdown
    would wait for it, with no graceful timeout, forever)."""
    filled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = await accepted(receive, send)
        if scope["path"] == "/stalled":
            fill(lambda: protocol.transport.write(BIG_FRAME), protocol.writable.is_set)
            filled.set_result(None)
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await protocol.closed()

    async with server(app) as (instance, port):
        reading = await connect(f"ws://127.0.0.1:{port}/")
        sock = small_buffer_socket(port)
        stalled = await connect(
            f"ws://127.0.0.1:{port}/stalled", sock=sock, max_queue=1, ping_interval=None
        )
        await asyncio.wait_for(filled, 10)
        instance.should_exit = True
        for _ in range(100):  # the drain, then the reset at the deadline: well within 10 s
            if not server_sockets(port, {sock.getsockname()[1]}) and reading.close_code:
                break
            await asyncio.sleep(0.1)
        assert server_sockets(port, {sock.getsockname()[1]}) == {}
        assert reading.close_code == 1012
        await reading.close()
        with contextlib.suppress(ConnectionClosed, OSError):
            await stalled.close()


async def test_an_unanswered_keepalive_closes_with_1011_and_resets_at_the_deadline() -> None:
    """A client that stopped reading misses the server's pings: the app is told (1011), and
    the connection is reset at the deadline instead of waiting for the client forever."""
    seen: dict[str, Any] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = await accepted(receive, send)
        fill(lambda: protocol.transport.write(BIG_FRAME), protocol.writable.is_set)
        seen["message"] = await receive()
        await protocol.closed()
        done.set_result(None)

    async with server(app, ws_ping_interval=0.1, ws_ping_timeout=0.2) as (_, port):
        client, peer = await stalled_websocket(port)
        await asyncio.wait_for(done, 10)
        assert await gone(port, peer) == {}
        with contextlib.suppress(ConnectionClosed, OSError):
            await client.close()
    assert seen["message"] == {
        "type": "websocket.disconnect",
        "code": 1011,
        "reason": "keepalive ping timeout",
    }


async def stalled_stream(port: int) -> socket.socket:
    sock = small_buffer_socket(port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


async def test_an_event_stream_a_client_never_reads_is_reset_at_the_deadline() -> None:
    """``DirectStream.end`` on a stream whose client stopped reading: the last chunk goes
    into the paused transport, the connection is reset at the deadline, and the server's
    socket is gone from the kernel (not a FIN_WAIT1 orphan with what the client never read)."""
    seen: dict[str, Any] = {}
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        stream = direct_stream(send)
        assert stream is not None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        flow = send.__self__.flow  # uvicorn's flow control: paused once the client stalls
        seen["writes"] = fill(lambda: stream.write(BIG_CHUNK), lambda: not flow.write_paused)
        seen["ended"] = await stream.end(DEADLINE_S)
        seen["again"] = await stream.end(DEADLINE_S)
        done.set_result(None)

    async with server(app) as (_, port):
        sock = await stalled_stream(port)
        await asyncio.wait_for(done, 10)
        assert await gone(port, sock.getsockname()[1]) == {}
        sock.close()
    assert seen["writes"] > 0
    assert seen["ended"] is True
    assert seen["again"] is False


async def test_an_event_stream_ends_cleanly_once_the_client_has_it_all() -> None:
    """A client that reads gets the whole body, well-formed; ``end`` returns as soon as the
    client has it, long before its deadline, and without resetting the connection."""
    ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        stream = direct_stream(send)
        assert stream is not None
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one\n", "more_body": True})
        stream.write(body_chunk(b"two\n"))
        ended.set_result(await stream.end(60))

    async with server(app) as (_, port), httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert response.text == "one\ntwo\n"
        assert await asyncio.wait_for(ended, 10) is True

"""A connection that ends is freed by reference counting, not left for the cyclic collector:
the real app in a real uvicorn in this process, with the collector switched off."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from websockets.asyncio.client import connect

from delineate.realtime.outbox import Outbox
from delineate.realtime.session import Session
from delineate.realtime.sse import EventStream
from delineate.settings import Settings
from delineate.uvicorn_ext.sockets import DirectSocket, LeanWebSocketProtocol
from tests.support.inprocess import running_app

PER_CONNECTION = (
    LeanWebSocketProtocol, DirectSocket, Session, Outbox, EventStream, RequestResponseCycle,
)  # fmt: skip
PER_SOCKET = (LeanWebSocketProtocol, DirectSocket, Session, Outbox, EventStream)


def census(things: list[object], kinds: tuple[type, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for thing in things:
        kind = type(thing)  # (not isinstance: it would dereference a dead weakref proxy)
        if issubclass(kind, kinds):
            counts[kind.__name__] = counts.get(kind.__name__, 0) + 1
    return counts


def cyclic_garbage() -> list[object]:
    """What a collector pass would free now."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    return found


async def test_closed_sockets_and_streams_leave_nothing_for_the_collector(
    tmp_path: Path,
) -> None:
    """WebSocket subscribers (closed by the server after the terminal frame, and closing
    first), SSE streams (ended by the server, and left by the client) and plain requests:
    once they are over, none of the server's per-connection objects waits for the cyclic
    collector. Kept in a cycle, each closed
    socket was about 40 objects that only a collector pass frees; thousands of them made that
    pass stall the loop, and freezing live sockets out of its sight would have leaked them."""
    settings = Settings(
        data_dir=str(tmp_path), download_delay_min_ms=500, download_delay_max_ms=500
    )
    async with running_app(settings) as served:
        await served.initiate([70000])  # warm: lazily built state is built
        cyclic_garbage()
        gc.disable()  # what reference counting does not free stays for the census
        # Connections of earlier tests in this process may still be ending: held here, they
        # are not this test's garbage.
        earlier = [o for o in gc.get_objects() if issubclass(type(o), PER_CONNECTION)]
        try:
            job_id = await served.initiate([70000])

            async def server_closes() -> None:
                async with connect(f"{served.ws_url}v1/download/subscribe/{job_id}") as ws:
                    async for _ in ws:
                        pass

            async def client_closes() -> None:
                async with connect(f"{served.ws_url}v1/download/subscribe/{job_id}") as ws:
                    async for message in ws:
                        if '"completed"' in str(message):
                            return

            async def stream(*, to_the_end: bool) -> None:
                url = f"/v1/download/stream/{job_id}"
                async with served.http.stream("GET", url) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if '"completed"' in line and not to_the_end:
                            return

            async with asyncio.timeout(20):
                await asyncio.gather(
                    *(server_closes() for _ in range(5)),
                    *(client_closes() for _ in range(5)),
                    *(stream(to_the_end=False) for _ in range(5)),
                    *(stream(to_the_end=True) for _ in range(5)),  # the server ends it
                )
            # The server lets go of a socket once it has handled the client's close.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while census(gc.get_objects(), PER_SOCKET) != census(earlier, PER_SOCKET):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            assert census(cyclic_garbage(), PER_CONNECTION) == {}
            assert census(gc.get_objects(), PER_SOCKET) == census(earlier, PER_SOCKET)
        finally:
            del earlier
            gc.enable()

"""A loopback TCP proxy whose replies can be held back: to prove that a client waits for an
answer (its request reaches the server at once; the server's bytes wait for ``release``).
It can also cut every open connection, or drop the next connections unanswered, as a lost
network would."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class ReplyGate:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._drop = 0
        self._relays: set[asyncio.Task[None]] = set()

    def hold(self) -> None:
        """From now on, server -> client bytes wait (requests still go through)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def cut(self) -> None:
        """Close every connection open now (both sides); new ones are relayed as before."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def drop_next(self, count: int) -> None:
        """Close the next ``count`` connections at once, before a byte is relayed."""
        self._drop = count

    async def __aenter__(self) -> ReplyGate:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        if self._relays:  # let them see their sockets closed, so none is left to the loop's end
            await asyncio.wait(self._relays, timeout=5)
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._drop > 0:
            self._drop -= 1
            client_w.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, server_w]
        await asyncio.gather(
            self._pipe(client_r, server_w, gated=False),
            self._pipe(server_r, client_w, gated=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if gated:
                    await self._open.wait()
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError):
                sink.close()

"""A socket session's reader and writer ending in the same loop step: the session ends
quietly (a stray cancellation of the connection's task was logged by uvicorn as an error)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from delineate.realtime.outbox import Outbox, Outgoing
from delineate.realtime.websocket import SocketSession


class EndsWithItsWriter(SocketSession):
    """Reading ends the moment the writer sends its last message (the writer finishing in
    the same step, its done-callback not yet run)."""

    __slots__ = ("finished", "read_ends")

    async def _read(self) -> None:
        self.read_ends: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.read_ends

    async def _send(self, item: Outgoing) -> bool:
        self.read_ends.set_result(None)
        return False  # the connection is done

    async def _finish(self) -> None:
        self.finished = True


async def test_a_reader_and_writer_ending_together_end_the_session_quietly() -> None:
    outbox = Outbox(limit=8)
    outbox.put(Outgoing("job", 1, "completed", "{}"))
    services: Any = SimpleNamespace(hub=SimpleNamespace(unwatch=lambda watch: None))
    frames: Any = SimpleNamespace(now=lambda item: None)
    session = EndsWithItsWriter(None, services, outbox, frames)  # type: ignore[arg-type]
    session.finished = False
    await session.run()  # before the fix: CancelledError, from the writer's late callback
    assert session.finished
    await asyncio.sleep(0)  # and nothing is left to cancel this task afterwards
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]

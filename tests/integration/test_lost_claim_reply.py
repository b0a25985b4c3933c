"""A worker's claim of a queued job that lands in Redis but whose reply is lost (the
connection drops right after the request) is recognised as its own on the retry, and the
job runs. Found by the chaos checker (tests/chaos): after a Redis restart a job stayed
``processing`` forever, its worker having logged "changed before it started"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.test_guarantees import settled
from tests.support.clients import initiate
from tests.support.processes import Replica, free_port
from tests.support.services import Backend

pytestmark = pytest.mark.integration

CLAIM = b"$5\r\nclaim\r\n"
"""The journal script's mode argument of a claim, as RESP puts it on the wire."""


class ClaimCutter:
    """A loopback proxy to Redis that, once, forwards a claim and then drops the
    connection that carried it before its reply can come back."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, free_port()
        self.armed = False
        self.cut = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ClaimCutter]:
        server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            # Closed and waited for: a transport left to the loop's end is an unraisable
            # warning in whichever test runs next.
            for writer in self._writers:
                writer.close()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 5)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [client_w, server_w]
        here = asyncio.Event()  # this connection carried the claim: its replies are dropped
        pipes = [
            self._requests(client_r, server_w, client_w, here),
            self._replies(server_r, client_w, here),
        ]
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _requests(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        here: asyncio.Event,
    ) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
            if self.armed and CLAIM in data and not self.cut.is_set():
                self.cut.set()
                here.set()
                await asyncio.sleep(0.2)  # Redis runs the script; its reply is dropped
                client.transport.abort()
                sink.transport.abort()
                return

    async def _replies(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, here: asyncio.Event
    ) -> None:
        while (data := await source.read(65536)) and not here.is_set():
            sink.write(data)
            await sink.drain()


async def test_a_claim_whose_reply_was_lost_still_runs_the_job(
    redis_backend: Backend, tmp_path: object
) -> None:
    """The claim lands (status processing, this worker's fence) but the worker never hears
    so; its retry finds the job processing under its own fence, and it runs the job to
    completed instead of leaving it processing with no one running it."""
    assert redis_backend.redis is not None
    async with ClaimCutter(redis_backend.redis.port).running() as cutter:
        env = {**redis_backend.env(), "REDIS_URL": f"redis://127.0.0.1:{cutter.port}/0"}
        replica = Replica("replica-claim", env, redis_backend.tmp)
        await asyncio.to_thread(replica.start)  # the proxy relays on this loop meanwhile
        try:
            async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
                # A first job loads the script into Redis: the claim then runs at once.
                first = (await initiate(http, [70000]))["jobId"]
                assert (await settled(http, first, timeout=30))["status"] == "completed"
                cutter.armed = True
                job_id = (await initiate(http, [70000]))["jobId"]
                done = await settled(http, job_id, timeout=30)
            assert cutter.cut.is_set()
            assert done["status"] == "completed"
            assert done["attempt"] == 1
        finally:
            await asyncio.to_thread(replica.stop)

"""How the SDK lets a single-job socket go after the terminal frame: the subscription ends at
once, and the server closes the socket on its turn (RFC 6455, 7.1.1: the server closes the
connection first). The real app in this process, with CLOSE_RATE=1 so the turns are apart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from delineate.settings import Settings
from delineate_client import AsyncClient, Backoff
from delineate_protocol.frames import AnyFrame, CompletedFrame
from tests.support.inprocess import running_app

FAST = Backoff(base=0.05, cap=0.5)


def settings(tmp_path: Path, close_rate: float = 1) -> Settings:
    return Settings(
        data_dir=str(tmp_path),
        download_delay_min_ms=1_000,
        download_delay_max_ms=1_000,
        close_rate=close_rate,
    )


def base_url(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://")


async def follow(client: AsyncClient, job_id: str) -> list[AnyFrame]:
    return [frame async for frame in client.subscribe(job_id)]


async def test_the_server_closes_first_and_the_caller_does_not_wait(tmp_path: Path) -> None:
    async with running_app(settings(tmp_path)) as served:
        job_id = await served.initiate([70000])
        async with AsyncClient(base_url(served.ws_url), backoff=FAST, trust_env=False) as client:
            followed = await asyncio.wait_for(
                asyncio.gather(*(follow(client, job_id) for _ in range(3))), 30
            )
            assert all(isinstance(frames[-1], CompletedFrame) for frames in followed)
            # The loops ended with the terminal frame; the server's closes come one a second,
            # so at least two sockets are still waiting for theirs.
            lingering = list(client._lingering)
            assert len(lingering) >= 2
            await asyncio.wait_for(asyncio.gather(*client._lingering.values()), 20)
            await asyncio.sleep(0)  # the tasks' done callbacks
            assert not client._lingering
        for ws in lingering:
            assert ws.protocol.close_rcvd_then_sent  # the server's close, answered
            assert (ws.close_code, ws.close_reason) == (1000, "job finished")


async def test_closing_the_client_lets_go_of_sockets_still_waiting(tmp_path: Path) -> None:
    """``aclose`` does not wait for the server's turns (here one close every 5 s): it closes
    the sockets still open from this side, within its short grace, and drops the rest."""
    async with running_app(settings(tmp_path, close_rate=0.2)) as served:
        job_id = await served.initiate([70000])
        client = AsyncClient(base_url(served.ws_url), backoff=FAST, trust_env=False)
        await asyncio.wait_for(asyncio.gather(*(follow(client, job_id) for _ in range(3))), 30)
        lingering = list(client._lingering)
        assert len(lingering) >= 2
        async with asyncio.timeout(4):  # the server's own closes would take 10 s
            await client.aclose()
            for ws in lingering:
                await ws.wait_closed()
        assert not client._lingering

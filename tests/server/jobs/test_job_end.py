"""How a job ends, as a subscriber sees it: the real app (in-process backends) in a real
uvicorn in this process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from delineate.settings import Settings
from tests.support.inprocess import running_app


async def test_the_last_files_frame_and_the_completed_frame_come_together_at_the_end(
    tmp_path: Path,
) -> None:
    """Each file gets its frame; the last one's is published with the completed frame (the
    seq right before it), so a replica writes them to each socket at once."""
    settings = Settings(
        data_dir=str(tmp_path), download_delay_min_ms=600, download_delay_max_ms=600
    )
    frames: list[dict[str, Any]] = []
    async with running_app(settings) as served:
        job_id = await served.initiate([70000, 70007])
        async with connect(f"{served.ws_url}v1/download/subscribe/{job_id}") as socket:
            async with asyncio.timeout(20):
                async for message in socket:
                    frames.append(json.loads(message))
    types = [f["type"] for f in frames]
    assert types[0] == "snapshot"
    assert types[-2:] == ["file", "completed"]
    files = [f for f in frames if f["type"] == "file"]
    assert [f["file"]["fileId"] for f in files] == [70000, 70007]
    assert frames[-2]["seq"] + 1 == frames[-1]["seq"]
    assert frames[-1]["filesIncluded"] == 2
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))  # increasing, no repeat

"""Open-loop `POST /v1/download/initiate` load at ``--rate`` requests/s; prints JSON.

    python bench/initiate_load.py --url http://127.0.0.1:8080 --rate 200 --seconds 10

Requests leave on a fixed schedule whatever the answers do (a closed loop would slow down with
the server and hide its worst moments), spread round-robin over the ``--url`` replicas on
kept-alive connections (``rawclient.HttpPool``: httpx cost this process ~2 ms of CPU per
request, which a busy box turned into latency charged to the server). Latency is from the
scheduled moment to the complete response, so a late start counts against the server, not for
it. Its own process: the load client that holds thousands of sockets would otherwise delay
these requests and bill the server for it.
Loopback only, unless ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadtest import check_loopback, quantiles
from rawclient import HttpPool


async def one(
    pool: HttpPool, url: str, due: float, latencies: list[float], errors: list[str]
) -> None:
    body = json.dumps({"file_ids": [70000 + 7 * (len(latencies) % 40)]}).encode()
    try:
        async with asyncio.timeout(30):
            status, answer = await pool.post_json(f"{url}/v1/download/initiate", body)
    except Exception as exc:  # every failure is a counted error, never a lost run
        errors.append(repr(exc))
        return
    if status != 202:
        errors.append(f"{status} {answer[:200].decode(errors='replace')}")
        return
    latencies.append((time.monotonic() - due) * 1000)


async def run(urls: list[str], rate: float, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    count = int(rate * seconds)
    pool = HttpPool()
    try:
        start = time.monotonic()
        pending = []
        for i in range(count):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            url = urls[i % len(urls)]
            pending.append(asyncio.ensure_future(one(pool, url, due, latencies, errors)))
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - start
    finally:
        pool.close()
    return {
        "rate_asked": rate,
        "requests": count,
        "rate_achieved": round(count / elapsed, 1) if elapsed else 0,
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "latency_ms": quantiles(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", action="append", help="base URL (repeatable)")
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--allow-remote", action="store_true")
    args = parser.parse_args(argv)
    urls = [u.rstrip("/") for u in (args.url or ["http://127.0.0.1:3000"])]
    check_loopback(urls, args.allow_remote)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(urls, args.rate, args.seconds))
    else:
        result = uvloop.run(run(urls, args.rate, args.seconds))
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per pub/sub message: redis-py's ``PubSub.get_message`` against the broker's reader.

    python bench/pubsub_reader.py [--messages 3000] [--gap-ms 1]

Starts its own redis-server on a loopback port; a separate publisher process sends
``--messages`` frames one at a time, ``--gap-ms`` apart (as a replica receives a job's
frames: each on its own, not in bursts); this process reads them with each reader in turn
and reports its own CPU per message received. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from delineate.broker.redis_pubsub import PubSubConnection  # noqa: E402
from delineate.devstack.stack import RedisServer  # noqa: E402

PAYLOAD = b'{"type":"progress","jobId":"x","seq":1,"ts":1.0,"progress":50}' + b" " * 100
CHANNEL = "bench"


async def publish(url: str, count: int, gap_s: float) -> None:
    client = aioredis.Redis.from_url(url)
    for _ in range(count):
        await client.publish(CHANNEL, PAYLOAD)
        await asyncio.sleep(gap_s)
    await client.publish(CHANNEL, b"END")
    await client.aclose()


async def with_redis_py(url: str, ready: asyncio.Event) -> int:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe reply
    ready.set()
    received = 0
    while True:
        message = await pubsub.get_message(timeout=1.0)  # as the broker read before
        if message and message["type"] == "message":
            if message["data"] == b"END":
                break
            received += 1
    await pubsub.aclose()
    await client.aclose()
    return received


async def with_broker_reader(url: str, ready: asyncio.Event) -> int:
    client = aioredis.Redis.from_url(url)
    pubsub = await PubSubConnection.open(client.connection_pool)
    await pubsub.subscribe(CHANNEL)
    await pubsub.read()
    ready.set()
    received = 0
    while True:
        for reply in await pubsub.read():
            if reply[2] == b"END":
                await pubsub.aclose()
                await client.aclose()
                return received
            received += 1


READERS = {"redis-py get_message": with_redis_py, "broker reader": with_broker_reader}


async def measure(reader: Any, url: str, args: argparse.Namespace) -> dict[str, float]:
    ready = asyncio.Event()
    task = asyncio.ensure_future(reader(url, ready))
    await ready.wait()
    cpu = time.process_time()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publish", url,
        "--messages", str(args.messages), "--gap-ms", str(args.gap_ms),
    )  # fmt: skip
    received = await task
    cpu = time.process_time() - cpu
    await publisher.wait()
    return {"messages": received, "cpu_us_per_message": round(cpu * 1e6 / received, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        uvloop.run(publish(args.publish, args.messages, args.gap_ms / 1000))
        return 0
    with tempfile.TemporaryDirectory(prefix="delineate-pubsub-bench-") as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            results = {name: uvloop.run(measure(r, redis.url, args)) for name, r in READERS.items()}
        finally:
            redis.stop()
    print(json.dumps({"gap_ms": args.gap_ms, "readers": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

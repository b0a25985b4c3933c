"""The event loop's lateness split by the kernel's account: its own stalls, or a wait for a
CPU on a box with more runnable threads than cores. Each case runs the monitor in a child
process, so pinning it to one CPU touches nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

MONITOR = """
import asyncio, json, sys, time
from delineate.observability.metrics import LoopLagMonitor, Metrics

async def main(spin_s, run_s):
    metrics = Metrics()
    task = asyncio.create_task(LoopLagMonitor(metrics).run())
    await asyncio.sleep(0.1)
    end = time.perf_counter() + spin_s  # the loop's own work, holding it
    while time.perf_counter() < end:
        pass
    await asyncio.sleep(run_s)
    task.cancel()
    def read(h):
        return {"counts": h.counts, "sum": h.sum, "bounds": list(h.bounds)}
    print(json.dumps({"lag": read(metrics.loop_lag), "stall": read(metrics.loop_stall)}))

asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
"""


def monitor(spin_s: float, run_s: float, cpu: int | None = None) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'server'}{os.pathsep}{ROOT}"}
    pinned = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    out = subprocess.run(
        [sys.executable, "-c", MONITOR, str(spin_s), str(run_s)],
        capture_output=True, text=True, timeout=60, env=env, preexec_fn=pinned, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def worst(histogram: dict) -> float:
    """The bound of the highest bucket with an observation."""
    bounds = [*histogram["bounds"], float("inf")]
    return max(b for b, n in zip(bounds, histogram["counts"], strict=True) if n)


def test_the_loops_own_work_is_a_stall() -> None:
    """80 ms of work in a callback: late by that much, and all of it the replica's own."""
    seen = monitor(spin_s=0.08, run_s=0.05)
    assert worst(seen["lag"]) >= 0.05
    assert worst(seen["stall"]) >= 0.05


def test_waiting_for_a_cpu_is_lateness_but_not_a_stall() -> None:
    """The monitor shares one CPU with three busy processes: it wakes up late, by about
    what the kernel made it wait, which the stall histogram leaves out."""
    cpu = min(os.sched_getaffinity(0))
    spin = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", spin], preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
        )
        for _ in range(3)
    ]
    try:
        time.sleep(0.2)  # they are running
        seen = monitor(spin_s=0.0, run_s=2.0, cpu=cpu)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    # Alone, 200 wake-ups are late by about 0.02 s in all.
    assert seen["lag"]["sum"] > 0.1, seen  # the contention was real
    assert seen["stall"]["sum"] < seen["lag"]["sum"] / 2, seen
    print(f"lag {seen['lag']['sum']:.3f} s, of it stalls {seen['stall']['sum']:.3f} s")

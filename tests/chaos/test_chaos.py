"""A bounded chaos run in the normal suite: seeded randomized trials (faults, races, slow and
resuming watchers) against 3 real replicas, Redis and SeaweedFS; the checker must find no
violation. ``make chaos`` runs the same for many more trials.

CHAOS_SEED replays a run; CHAOS_TRIALS sizes it (default: 6 on one node, 4 on Cluster and
Sentinel)."""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.chaos import harness

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("redis_mode", "default_trials"), [
    ("single", 6), ("cluster", 4), ("sentinel", 4),
])  # fmt: skip
async def test_randomized_trials_under_faults_keep_every_guarantee(
    redis_mode: str, default_trials: int
) -> None:
    """Every trial's history keeps every invariant of docs/guarantees.md, and the run did
    inject faults and check frames (it cannot pass by doing nothing). On Cluster and Sentinel
    the faults include killing a Redis primary."""
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1 << 31))
    trials = int(os.environ.get("CHAOS_TRIALS", str(default_trials)))
    print(f"CHAOS_REDIS={redis_mode} CHAOS_SEED={seed}")
    summary = (await harness.run(seed, trials, redis_mode=redis_mode)).to_dict()
    report = json.dumps(summary, indent=1)
    assert summary["violations"] == 0, f"CHAOS_REDIS={redis_mode} CHAOS_SEED={seed}\n{report}"
    assert summary["trials"] == trials
    assert sum(summary["faults"].values()) > 0, report
    assert summary["frames_checked"] > 0, report
    assert summary["operations_checked"] > 0, report
    assert "completed" in summary["outcomes"], report
    if redis_mode == "single":
        assert set(summary["outcomes"]) >= {"completed", "cancelled"}, report
    else:
        assert summary["faults"].get("primary_kill", 0) > 0, report

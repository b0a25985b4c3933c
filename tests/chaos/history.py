"""What one chaos trial did and saw, as plain data: the client operations, every frame each
watcher received, the faults injected and each job's final state (status document, bucket).

The workload and the harness only append to a ``Trial``; ``checker`` reads it. Times are
``time.monotonic()`` seconds of the harness process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"completed", "failed", "cancelled"})
LOST = "lost"
"""A job's final state when the server no longer knows it (404 after Redis lost its data)."""


@dataclass
class Op:
    """One client request and its answer. ``code`` None: no answer (connection refused or
    reset, timeout): its effect is unknown."""

    kind: str  # initiate | cancel | result | download | foreign_status
    owner: str
    t_start: float
    t_end: float = 0.0
    job_id: str | None = None
    key: str | None = None  # Idempotency-Key
    code: int | None = None
    replayed: bool = False
    status: str | None = None  # the job status the answer names, if any
    detail: str = ""


@dataclass
class Seen:
    """One frame (or polled status document) as a watcher received it."""

    type: str  # a frame type, or "poll" for a status document
    seq: int
    epoch: str
    t: float
    recovered: bool = True
    status: str | None = None  # the status it reports: a terminal type, or a snapshot's
    error_code: str | None = None
    download_url: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class Connection:
    """One connection of a watcher: where it resumed from and how it ended."""

    replica: str
    since: str | None
    t_start: float
    t_end: float = 0.0
    ended: str = ""  # closed:<code> | eof | error:<kind> | hangup (the client's own)


@dataclass
class Watcher:
    """One client following one job over one transport, reconnecting with its last position."""

    name: str
    job_id: str
    transport: str  # ws | mux | sse | poll
    owner: str
    slow: bool = False
    seen: list[Seen] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    ended_at: float | None = None  # when it stopped following (None: it never did: hung)
    end: str = ""  # terminal | gone (404) | gave_up | hung
    notes: list[str] = field(default_factory=list)  # error messages the server sent


@dataclass
class Fault:
    kind: str
    target: str
    t_start: float
    t_end: float = 0.0
    detail: str = ""


@dataclass
class Job:
    """A job the trial made, and what the world says of it once the trial has settled."""

    job_id: str
    owner: str
    final: dict[str, Any] | None = None  # the status document; None when it answers 404
    settled: bool = False  # a final answer was read (a terminal document or a 404)
    terminal_at: float | None = None  # first time anyone saw it terminal
    bundles: list[str] = field(default_factory=list)  # every exports/<jobId>.* object
    download_ok: bool | None = None  # its downloadUrl gave a valid zip (None: not tried)
    download_detail: str = ""
    reference: list[tuple[str, int, str]] | None = None
    """(epoch, seq, type) of every frame in the job's stored history, read from Redis."""

    @property
    def final_status(self) -> str | None:
        if not self.settled:
            return None
        return LOST if self.final is None else str(self.final["status"])

    @property
    def lost(self) -> bool:
        """Ended as lost: a 404, or failed with job_lost."""
        if self.final_status == LOST:
            return True
        error = (self.final or {}).get("error") or {}
        return self.final_status == "failed" and error.get("code") == "job_lost"


@dataclass
class Trial:
    seed: int
    index: int
    ops: list[Op] = field(default_factory=list)
    watchers: list[Watcher] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    wipes: list[float] = field(default_factory=list)
    """When Redis may have lost data: came back empty (a restart without persistence), or a
    primary was killed (a failover drops what had not reached the replica) and when it
    followed the new primary again."""
    hang_bound_s: float = 20.0

    def job(self, job_id: str, owner: str) -> Job:
        if job_id not in self.jobs:
            self.jobs[job_id] = Job(job_id, owner)
        return self.jobs[job_id]

    def era(self, t: float) -> int:
        """How many wipes happened before ``t``: what Redis can remember at ``t``."""
        return sum(1 for wipe in self.wipes if wipe <= t)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

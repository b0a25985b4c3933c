"""Where the replicas share what the dashboard shows: one interface, two backends.

``memory`` serves the one replica of the embedded mode; ``redis_store`` lets every replica
read every replica's heartbeat, and one bounded list each of recent jobs and errors, so
any replica's dashboard shows all of them. Entries are encoded records (``ops.records``).
"""

from __future__ import annotations

import abc
from collections import OrderedDict, deque

SPANS_PER_TRACE = 500
TRACE_TTL_S = 3600


class OpsStore(abc.ABC):
    def __init__(self, *, keep: int, traces: int) -> None:
        self.keep, self.traces = keep, traces
        """Entries kept per list; traces whose spans are kept (the newest)."""

    @abc.abstractmethod
    async def beat(self, replica: str, beat: bytes) -> None: ...

    @abc.abstractmethod
    async def beats(self) -> list[bytes]: ...

    @abc.abstractmethod
    async def forget(self, replica: str) -> None:
        """Drop a replica's heartbeat (it stopped, or it has been silent too long)."""

    @abc.abstractmethod
    async def push(self, jobs: list[bytes], errors: list[bytes]) -> None:
        """Add to the fronts of the recent-jobs and recent-errors lists, oldest first."""

    @abc.abstractmethod
    async def recent(self) -> tuple[list[bytes], list[bytes]]:
        """(jobs, errors), newest first."""

    @abc.abstractmethod
    async def add_spans(self, spans: dict[str, list[bytes]]) -> None:
        """Spans by trace id."""

    @abc.abstractmethod
    async def spans(self, trace_id: str) -> list[bytes]: ...


class MemoryOpsStore(OpsStore):
    def __init__(self, *, keep: int, traces: int) -> None:
        super().__init__(keep=keep, traces=traces)
        self._beats: dict[str, bytes] = {}
        self._jobs: deque[bytes] = deque(maxlen=keep)
        self._errors: deque[bytes] = deque(maxlen=keep)
        self._spans: OrderedDict[str, list[bytes]] = OrderedDict()

    async def beat(self, replica: str, beat: bytes) -> None:
        self._beats[replica] = beat

    async def beats(self) -> list[bytes]:
        return list(self._beats.values())

    async def forget(self, replica: str) -> None:
        self._beats.pop(replica, None)

    async def push(self, jobs: list[bytes], errors: list[bytes]) -> None:
        self._jobs.extendleft(jobs)
        self._errors.extendleft(errors)

    async def recent(self) -> tuple[list[bytes], list[bytes]]:
        return list(self._jobs), list(self._errors)

    async def add_spans(self, spans: dict[str, list[bytes]]) -> None:
        for trace_id, items in spans.items():
            kept = self._spans.setdefault(trace_id, [])
            kept.extend(items[: SPANS_PER_TRACE - len(kept)])
            self._spans.move_to_end(trace_id)
        while len(self._spans) > self.traces:
            self._spans.popitem(last=False)

    async def spans(self, trace_id: str) -> list[bytes]:
        return list(self._spans.get(trace_id, []))

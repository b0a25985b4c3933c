"""A replica's drain, as the connections see it.

On SIGTERM a WebSocket gets close 1012 from uvicorn, but an event stream is a response that
never ends by itself, and uvicorn waits for it. So each open stream registers how to end
itself, and the drain calls every one (its client reconnects to another replica with
``Last-Event-ID``): one set per replica rather than a task per stream waiting on an event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Draining:
    """Set once, on SIGTERM: readiness reports it, and the streams ``add``ed are stopped."""

    __slots__ = ("_set", "_stops")

    def __init__(self) -> None:
        self._set = False
        self._stops: set[Callable[[], object]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        stops, self._stops = self._stops, set()
        for stop in stops:
            try:
                stop()
            except Exception:  # one stream's failure must not keep the others open
                log.exception("stopping a stream for the drain failed")

    def add(self, stop: Callable[[], object]) -> None:
        """Call ``stop`` on the drain (at once if it started already)."""
        if self._set:
            stop()
        else:
            self._stops.add(stop)

    def discard(self, stop: Callable[[], object]) -> None:
        self._stops.discard(stop)

    def __len__(self) -> int:
        return len(self._stops)

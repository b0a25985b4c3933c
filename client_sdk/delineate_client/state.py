"""Connection states a subscription reports to ``AsyncClient(on_state=...)``."""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    """Opening a connection (the first, or after a loss)."""
    CONNECTED = "connected"
    """The first message arrived on the connection."""
    RECONNECTING = "reconnecting"
    """The connection was lost; waiting ``delay`` seconds before the next attempt."""
    FALLBACK = "fallback"
    """This transport cannot work here; trying the next one."""
    CLOSED = "closed"
    """The subscription ended (the job ended, or it gave up: see ``error``)."""


class StateChange(msgspec.Struct, frozen=True, kw_only=True):
    state: ConnectionState
    transport: str
    job_ids: tuple[str, ...]
    delay: float | None = None
    error: str | None = None


StateCallback = Callable[[StateChange], None]

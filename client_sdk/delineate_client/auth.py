"""Where the client's credential comes from: a fixed string, or a callable (plain or async)
asked again before each (re)connect and after a 401, so a short-lived JWT can be renewed."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

TokenSource = str | Callable[[], str | None] | Callable[[], Awaitable[str | None]]
"""An API key or JWT, or a function returning a fresh one (None: send no credential)."""


class Credentials:
    __slots__ = ("_current", "_source")

    def __init__(self, source: TokenSource | None) -> None:
        self._source = source
        self._current: str | None = source if isinstance(source, str) else None

    @property
    def refreshable(self) -> bool:
        return callable(self._source)

    async def token(self, *, fresh: bool = False) -> str | None:
        """The token to send; ``fresh`` asks a callable source again (before a reconnect,
        after a 401). A fixed token is returned as it is."""
        if callable(self._source) and (fresh or self._current is None):
            value = self._source()
            if inspect.isawaitable(value):
                value = await value
            self._current = value
        return self._current

    async def headers(self, *, fresh: bool = False) -> dict[str, str]:
        token = await self.token(fresh=fresh)
        return {"Authorization": f"Bearer {token}"} if token else {}

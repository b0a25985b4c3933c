"""Who may open a real-time connection: the Origin check and the per-address cap.

Browsers send ``Origin`` on WebSocket handshakes but cannot be stopped by CORS there, so a
page on another site could open sockets with the user's cookies (cross-site WebSocket
hijacking). With CORS_ORIGINS restricted, a handshake from another origin is refused (403).
Clients without an Origin (SDK, wscat) are not browsers and pass.
"""

from __future__ import annotations

from collections import Counter

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from delineate.errors import RateLimited
from delineate.http.edge import client_ip
from delineate.settings import Settings


def origin_allowed(conn: HTTPConnection, settings: Settings) -> bool:
    # Not ``conn.headers``: that caches the headers on the connection for its whole life.
    origin = Headers(scope=conn.scope).get("origin")
    if origin is None or settings.cors_origins.strip() == "*":
        return True
    return origin in settings.cors_origin_list


class ConnectionCap:
    """At most ``limit`` open real-time connections per client address (on this replica)."""

    def __init__(self, limit: int, trusted_proxies: list[str] | None) -> None:
        self.limit, self.trusted_proxies = limit, trusted_proxies
        self._open: Counter[str] = Counter()

    def acquire(self, conn: HTTPConnection) -> str:
        """Count one more connection for the caller's address (returned, for ``release``);
        RateLimited past the cap. Plain calls rather than a context manager: one is held for
        every open socket, and a suspended generator costs memory per socket."""
        address = client_ip(conn.scope, self.trusted_proxies)
        if self._open[address] >= self.limit:
            raise RateLimited(f"at most {self.limit} live connections per address")
        self._open[address] += 1
        return address

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if not self._open[address]:
            del self._open[address]

"""REDIS_URL's three forms, parsed (pure: the settings check it at start-up, the client
factory in ``delineate.redis.client`` builds from it)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

__all__ = ["RedisTarget", "parse_redis_url"]


class RedisTarget(msgspec.Struct, frozen=True, kw_only=True):
    """What REDIS_URL names: one node, a Sentinel-managed primary, or a Cluster."""

    mode: Literal["single", "sentinel", "cluster"]
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    """Sentinels (sentinel) or seed nodes (cluster)."""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """``redis://`` / ``rediss://`` / ``unix://``: one node (redis-py's own URL syntax).
    ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>[/<db>]`` (``rediss+...``:
    TLS to the primary; ``?sentinel_password=`` when the sentinels want one).
    ``redis+cluster://[user:pass@]h1:7000,h2:7001`` (``rediss+cluster://``): seed nodes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget(mode="single", url=url)
    base, _, mode = scheme.partition("+")
    if base not in ("redis", "rediss") or mode not in ("sentinel", "cluster"):
        raise ValueError(f"REDIS_URL: unknown scheme {parts.scheme!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"REDIS_URL: {host!r} is not host:port")
        nodes.append((name.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("REDIS_URL: no host:port given")
    path = [unquote(p) for p in parts.path.split("/") if p]
    query = parse_qs(parts.query)
    service, db = "", 0
    if mode == "sentinel":
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("REDIS_URL: a Sentinel URL ends in /<service>[/<db>]")
        service, db = path[0], int(path[1]) if len(path) == 2 else 0
    elif path:
        raise ValueError("REDIS_URL: a Cluster URL has no path (Cluster has one database)")
    return RedisTarget(
        mode=mode,  # type: ignore[arg-type]
        url=url,
        nodes=tuple(nodes),
        service=service,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=base == "rediss",
        sentinel_password=query.get("sentinel_password", [None])[0],
    )

"""The versions of the libraries whose private parts the server uses, as (from, to exclusive)
ranges they were written and tested against: uvicorn (``uvicorn_http``, ``realtime.wire``)
and redis-py (``redis_client``, ``redis_pipe``, ``broker.redis_pubsub``). pyproject.toml's
upper bounds and the lock match them; the tests of those parts fail outside them."""

from __future__ import annotations

from importlib.metadata import version

Range = tuple[tuple[int, int], tuple[int, int]]
SUPPORTED_UVICORN = ((0, 54), (0, 55))
SUPPORTED_REDIS = ((8, 1), (8, 2))
SUPPORTED: dict[str, Range] = {"uvicorn": SUPPORTED_UVICORN, "redis": SUPPORTED_REDIS}


def installed(distribution: str) -> tuple[int, int]:
    major, minor = version(distribution).split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def unsupported(distribution: str) -> str | None:
    """Why the installed ``distribution`` is outside its tested range; None when inside."""
    (low, high), found = SUPPORTED[distribution], installed(distribution)
    if low <= found < high:
        return None
    tested = f"{low[0]}.{low[1]} <= v < {high[0]}.{high[1]}"
    return (
        f"{distribution} {version(distribution)} is outside the tested range {tested}: the "
        "server uses its private parts; re-read the modules delineate/versions.py names, "
        "then widen the range"
    )

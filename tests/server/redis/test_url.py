"""REDIS_URL's three forms (pure parsing; the clients themselves run in the integration and
contract tests against real servers)."""

from __future__ import annotations

import pytest

from delineate.redis.url import parse_redis_url
from delineate.settings import Settings


def test_one_node_urls_are_redis_pys_own() -> None:
    for url in ("redis://h:6379/0", "rediss://u:p@h:6380/2", "unix:///tmp/redis.sock"):
        target = parse_redis_url(url)
        assert (target.mode, target.url) == ("single", url)


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    hosts = "10.0.0.1:26379,[::1]:26380"
    target = parse_redis_url(
        f"rediss+sentinel://app:s%40cret@{hosts}/mymaster/3?sentinel_password=sp"
    )
    assert target.mode == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("::1", 26380))
    assert (target.service, target.db, target.tls) == ("mymaster", 3, True)
    assert (target.username, target.password, target.sentinel_password) == ("app", "s@cret", "sp")
    plain = parse_redis_url("redis+sentinel://s1:26379/delineate")
    assert (plain.service, plain.db, plain.tls, plain.password) == ("delineate", 0, False, None)


def test_a_cluster_url_names_seed_nodes() -> None:
    target = parse_redis_url("redis+cluster://:pw@n1:7000,n2:7001")
    assert target.mode == "cluster"
    assert target.nodes == (("n1", 7000), ("n2", 7001))
    assert (target.username, target.password, target.tls) == (None, "pw", False)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://n1:7000/0",  # a Cluster has one database
        "redis+sentinel://s1:26379",  # no service
        "redis+sentinel://s1:26379/svc/x",
        "redis+cluster://n1",  # no port
        "redis+cluster://",
        "memcached+cluster://n1:7000",
        "redis+shard://n1:7000",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        parse_redis_url(url)


def test_a_malformed_redis_url_stops_the_settings() -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        Settings(redis_url="redis+cluster://n1:7000/0")

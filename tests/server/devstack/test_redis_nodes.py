"""The local Redis nodes behave as ones run from their config files do."""

from __future__ import annotations

from pathlib import Path

import redis

from delineate.devstack.stack import RedisServer, config_lines


def test_options_become_config_lines() -> None:
    options = ["--port", "7000", "--save", '""', "--replicaof", "127.0.0.1", "7001"]
    assert config_lines(options) == 'port 7000\nsave ""\nreplicaof 127.0.0.1 7001\n'


def test_a_node_comes_back_in_the_role_it_was_last_given(tmp_path: Path) -> None:
    """Sentinel re-points a node with REPLICAOF and CONFIG REWRITE: the first one started as a
    replica and promoted since must restart as a primary, not as the replica its first
    settings made it (two nodes each following the other, and no primary left, otherwise)."""
    primary = RedisServer(tmp_path, name="primary")
    replica = RedisServer(
        tmp_path, name="replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    primary.start()
    replica.start()
    try:
        with redis.Redis(port=replica.port) as client:
            assert client.info("replication")["role"] == "slave"
            client.execute_command("REPLICAOF", "NO", "ONE")
            client.execute_command("CONFIG", "REWRITE")
        replica.stop()
        replica.start()
        with redis.Redis(port=replica.port) as client:
            assert client.info("replication")["role"] == "master"
    finally:
        replica.stop()
        primary.stop()

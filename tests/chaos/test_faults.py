"""The fault plans (pure): which faults each Redis mode gets, and the forced primary kill;
and the S3 proxy's own sockets."""

from __future__ import annotations

import gc
import random
import socket
import time
import warnings

from tests.chaos import faults

REPLICAS = ["replica-0", "replica-1", "replica-2"]


def test_cluster_and_sentinel_kill_primaries_instead_of_restarting_one_node() -> None:
    kinds = faults.kinds_for("cluster")
    assert kinds == faults.kinds_for("sentinel")
    plans = [
        plan
        for seed in range(300)
        for plan in faults.plan_faults(random.Random(seed), REPLICAS, 1.5, kinds)
    ]
    drawn = {plan.kind for plan in plans}
    assert "primary_kill" in drawn
    assert not drawn & {"redis_restart", "redis_wipe"}
    assert faults.kinds_for("single") == faults.KINDS


def test_a_forced_primary_kill_replaces_other_redis_faults_and_keeps_the_rest() -> None:
    pause = faults.FaultPlan("pause", "replica-1", 0.1, 1.0)
    hang = faults.FaultPlan("s3_hang", "s3", 0.2, 1.0)
    plans = faults.with_primary_kill(random.Random(1), [pause, hang])
    assert plans[:2] == [pause, hang]
    (kill,) = plans[2:]
    assert (kill.kind, kill.target) == ("primary_kill", "redis")
    assert 1.5 <= kill.length <= 4  # past the 1 s failover timeout
    already = [faults.FaultPlan("primary_kill", "redis", 0.0, 0.6)]
    assert faults.with_primary_kill(random.Random(1), already) == already


def test_the_s3_proxy_stopped_while_it_connects_closes_every_socket() -> None:
    """Stopping the proxy while a relay still waits for its connection to S3 (a target whose
    accept queue is full) leaves no accepted socket to the garbage collector: a
    ResourceWarning there fails whichever test happens to be running."""
    with socket.socket() as target, socket.socket() as filler:
        target.bind(("127.0.0.1", 0))
        target.listen(0)
        filler.connect(target.getsockname())  # the queue is full: the proxy's connect waits
        proxy = faults.S3Proxy(target.getsockname()[1])
        proxy.start()
        with socket.create_connection(("127.0.0.1", proxy.port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")
            time.sleep(0.2)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                proxy.stop()
                gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_the_s3_proxy_stopped_before_its_relays_ran_closes_every_socket() -> None:
    """Connections the proxy accepted in the same loop turn as its stop: their relay tasks
    exist but never ran, so only the proxy itself can close their sockets."""
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen(16)
        proxy = faults.S3Proxy(target.getsockname()[1])
        proxy.start()
        proxy._loop.call_soon_threadsafe(time.sleep, 0.3)  # the proxy's loop is busy...
        clients = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(4)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            proxy.stop()  # ...so it accepts them and stops in one go
            gc.collect()
        for client in clients:
            client.close()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []

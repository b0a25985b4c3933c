"""The development stack: child processes on loopback (redis-server, a Redis Cluster or
Sentinels, SeaweedFS, replicas, nginx) for `delineate stack` and the tests; never on a
request's path."""

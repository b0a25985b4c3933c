"""One Redis connection on which concurrent callers' commands are pipelined.

A job's frame is one script call (``delineate.journal.redis``), and through redis-py a call
costs the replica more than the script: a pool checkout and check-in under a condition
lock, a health check, a timeout context around the write and another around the read, the
retry wrapper, the parser's wrapper. Profiled on a replica at the end of the bench's jobs,
the journal's 367 calls took 0.12 s of 0.94 s of CPU, 0.11 s of it inside redis-py.

``RedisPipe`` writes each command straight to one connection's socket and keeps a future
per command in a FIFO; one reader task feeds the replies to a ``hiredis.Reader`` and
resolves the futures in order (Redis answers a connection's commands in the order they
came). Callers never wait for each other's round trips: fifty jobs that emit at once share
the connection as one pipeline.

The connection is redis-py's (made by the client's pool), so every option of the URL
applies: password, username, TLS, unix socket, database, client name. A caller that is
cancelled leaves its reply to be read and dropped, so the replies stay in step.

Failures are redis-py's exceptions, so callers handle them as they handle the client's:
``ConnectionError`` when the connection is lost or cannot be made (every command still
waiting gets it; the next call connects again), ``TimeoutError`` when a reply takes longer
than the socket timeout (the connection is then dropped, as redis-py drops one whose read
timed out), and ``ResponseError`` for an error reply, after which the pipe goes on; but a
``READONLY`` or ``NOREPLICAS`` reply (``delineate.redis.errors.from_a_lost_primary``) is a lost
connection, as redis-py's Sentinel connections treat ``READONLY``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from delineate.redis.errors import from_a_lost_primary

READ_SIZE = 65536
DEFAULT_TIMEOUT_S = 5.0


class PipeScript:
    """A Lua script called by its SHA1 (``EVALSHA``), sent in full when Redis lacks it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisPipe:
    def __init__(self, pool: Any, *, timeout_s: float | None = None) -> None:
        self._pool = pool
        socket_timeout = pool.connection_kwargs.get("socket_timeout")
        self._timeout_s = timeout_s or socket_timeout or DEFAULT_TIMEOUT_S
        self._connection: Any = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command; its reply (``ResponseError`` raised for an error reply)."""
        connection = self._connection or await self._connect()
        packed = connection.pack_command(*args)
        reply = asyncio.get_running_loop().create_future()
        # The writer buffers what the socket does not take at once; there is no drain,
        # since a Redis that stops reading is caught by the reply timeout below.
        try:
            writer = connection._writer
            if writer is None:  # closed under the pipe (Sentinel's watch), unseen by the reader
                raise OSError("connection closed")
            writer.writelines(packed)
        except (RuntimeError, OSError) as exc:
            # The socket closed before the reader saw it (a Redis killed): uvloop refuses
            # the write with RuntimeError. The same ConnectionError as any lost connection.
            lost = RedisConnectionError(f"Redis pipe: {exc}")
            await self._drop(connection, lost)
            raise lost from exc
        self._pending.append(reply)
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await reply
        except TimeoutError:
            await self._drop(connection, RedisTimeoutError("Timeout reading from Redis"))
            raise RedisTimeoutError("Timeout reading from Redis") from None
        if isinstance(result, hiredis.ReplyError):
            message = str(result)
            if from_a_lost_primary(message):
                # A failover demoted the node, or it is a primary left alone: a lost
                # connection, so the next call asks the pool (Sentinel) for the primary.
                lost = RedisConnectionError(f"Redis pipe: {message}")
                await self._drop(connection, lost)
                raise lost
            raise _response_error(message)
        return result

    async def call_for(self, key: str, *args: str | int | bytes) -> Any:
        """``call``: the one node holds every key (``ClusterPipe`` routes by ``key``)."""
        return await self.call(*args)

    async def evalsha(
        self, script: PipeScript, keys: list[str], args: list[str | int | bytes]
    ) -> Any:
        """Run ``script``: by its SHA1, or in full when Redis does not have it cached (a
        restarted Redis, a ``SCRIPT FLUSH``, a failover)."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.call("EVAL", script.source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the connection (a later call would open another)."""
        connection = self._connection
        if connection is not None:
            self._lose(connection, RedisConnectionError("Redis pipe closed"))
            await connection.disconnect()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _connect(self) -> Any:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None:  # another caller connected meanwhile
                return self._connection
            connection = self._pool.make_connection()
            await connection.connect()  # redis-py's ConnectionError when Redis is away
            self._connection = connection
            self._reader = asyncio.create_task(self._read(connection), name="redis-pipe-reader")
            return connection

    async def _read(self, connection: Any) -> None:
        # The stream redis-py connected; pinned by tests/server/test_redis_pipe.py.
        stream: asyncio.StreamReader | None = connection._reader
        parser = hiredis.Reader()
        pending = self._pending
        try:
            if stream is None:  # closed under the pipe before this task first ran
                raise RedisConnectionError("Redis pipe: connection closed")
            while self._connection is connection:
                data = await stream.read(READ_SIZE)
                if not data:
                    raise RedisConnectionError("Connection closed by the server")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not pending:
                        raise RedisConnectionError("Redis sent a reply nobody asked for")
                    waiter = pending.popleft()
                    if not waiter.done():  # its caller was cancelled: drop the reply
                        waiter.set_result(reply)
        except RedisConnectionError as exc:
            await self._drop(connection, exc)
        except (OSError, hiredis.ProtocolError) as exc:
            await self._drop(connection, RedisConnectionError(f"Redis pipe: {exc!r}"))

    async def _drop(self, connection: Any, error: Exception) -> None:
        """``_lose`` it, and close its socket at once."""
        self._lose(connection, error)
        await connection.disconnect(nowait=True)

    def _lose(self, connection: Any, error: Exception) -> None:
        """``connection`` is no longer usable: every command waiting on it fails with
        ``error``, and the next call connects again. The caller disconnects it."""
        if self._connection is not connection:
            return
        self._connection = None
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            if not waiter.done():
                waiter.set_exception(error)


def _response_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)

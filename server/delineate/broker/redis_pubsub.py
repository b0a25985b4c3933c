"""The Redis broker's pub/sub connection, read without redis-py's per-message machinery.

redis-py's ``PubSub.get_message`` costs a replica about 100 us of CPU per message that
arrives on its own (a timeout context, locks, a parser wrapper and a dict per message), and
a replica receives every frame of every job its clients follow. ``bench/pubsub_reader.py``
(2 cores, a message a millisecond): redis-py 99-111 us per message, this reader 51-63 us,
most of it the event loop and the stream waking up at all.

The connection itself is still redis-py's (made by the listener client's pool), so the
URL's options apply unchanged: password, username, TLS, unix socket, client name. Only the
reading differs: the bytes that arrive are fed to a ``hiredis.Reader`` and every complete
reply in them is returned at once, one wake-up per batch. In subscribe mode Redis sends
only pushes (``message``, ``subscribe``, ``unsubscribe``, their sharded ``s...`` forms) and
PING's answer, so no reply
has to be matched to a request.

``ping`` and ``silent_since_ping`` let the broker notice a connection that went silent (a
half-open TCP connection after a network cut never reports an error by itself).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError

READ_SIZE = 65536

PubSubReply = list[Any] | bytes
"""A push from Redis (``[b"message", channel, data]``, ``[b"subscribe", channel, count]``...)
or, in RESP3, PING's ``b"PONG"``."""


class PubSubConnection:
    def __init__(self, connection: Any) -> None:
        self._connection = connection
        # The stream redis-py connected; pinned by tests/server/broker/test_redis_pubsub.py.
        self._stream: asyncio.StreamReader = connection._reader
        self._transport: asyncio.WriteTransport = connection._writer.transport
        self._parser = hiredis.Reader()
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self._last_read_at = loop.time()
        self._pinged_at: float | None = None

    @classmethod
    async def open(cls, pool: Any) -> PubSubConnection:
        """A new connection of ``pool`` (not shared with its commands), connected."""
        connection = pool.make_connection()
        await connection.connect()
        return cls(connection)

    async def subscribe(self, *channels: str) -> None:
        await self._send("SUBSCRIBE", *channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._send("UNSUBSCRIBE", *channels)

    async def ssubscribe(self, *channels: str) -> None:
        """Shard channels (Redis 7, Cluster): only on the primary that owns their slot."""
        await self._send("SSUBSCRIBE", *channels)

    async def sunsubscribe(self, *channels: str) -> None:
        await self._send("SUNSUBSCRIBE", *channels)

    async def ping(self) -> None:
        self._pinged_at = self._time()
        await self._send("PING")

    def silent_since_ping(self) -> bool:
        """Nothing at all has arrived since the last ``ping`` was sent."""
        return self._pinged_at is not None and self._last_read_at < self._pinged_at

    async def read(self) -> list[PubSubReply]:
        """Every reply that has arrived, at least one (waiting for it).

        Raises redis-py's ``ConnectionError`` when the connection ends or Redis answers
        with an error (nothing in subscribe mode should)."""
        while True:
            replies = []
            try:
                while (reply := self._parser.gets()) is not False:
                    if isinstance(reply, hiredis.ReplyError):
                        raise RedisConnectionError(f"pub/sub connection got an error: {reply}")
                    replies.append(reply)
            except hiredis.ProtocolError as exc:
                raise RedisConnectionError(f"pub/sub connection out of step: {exc}") from exc
            if replies:
                return replies
            data = await self._stream.read(READ_SIZE)
            if not data:
                await self._connection.disconnect(nowait=True)
                raise RedisConnectionError("pub/sub connection closed by the server")
            self._last_read_at = self._time()
            self._parser.feed(data)

    async def aclose(self) -> None:
        """Close, and wake a ``read`` waiting on this connection with ``ConnectionError``.

        redis-py's ``disconnect`` does nothing once the connection has forgotten its socket
        (a failed write drops it), and a graceful close waits to flush to a peer that may
        never read: either way a pending read would wait forever on a silent connection."""
        self._stream.set_exception(RedisConnectionError("pub/sub connection closed"))
        self._transport.abort()
        await self._connection.disconnect(nowait=True)

    async def _send(self, *args: str) -> None:
        if not self._connection.is_connected:
            # redis-py would connect again on the write: a new socket this reader never reads.
            raise RedisConnectionError("pub/sub connection closed")
        # check_health=False: redis-py's health check would read a PING reply itself, on a
        # connection that only this reader reads.
        packed = self._connection.pack_command(*args)
        await self._connection.send_packed_command(packed, check_health=False)

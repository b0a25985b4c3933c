"""A minimal WebSocket client for the load test: an asyncio Protocol, one callback per message.

Thousands of sockets in one Python process: with a full client library the load client spends
more CPU per message than the servers it measures, and its own queueing shows up as server
latency. This client does only what the load test needs (RFC 6455 client side: handshake,
unmasked server frames, masked client frames, ping/pong, close) and hands each text message
to a callback without a coroutine switch. It is bench code, not a general client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import Callable

from rawclient import open_get

OnMessage = Callable[["WsConnection", bytes], None]
GUARD = 64 * 1024 * 1024  # a frame larger than this is a protocol error here


class WsConnection(asyncio.Protocol):
    def __init__(self, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code = 1006
        self._buffer = bytearray()
        self._handshaken = False
        self._fragments: list[bytes] = []
        self._close_sent = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._handshaken:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
            del self._buffer[: end + 4]
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(status.decode(errors="replace")))
                return
            self._handshaken = True
            if not self.opened.done():  # not given up on (open_get's timeout)
                self.opened.set_result(None)
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # --- frames ------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if length > GUARD:
                self._fail(ConnectionError("frame too large"))
                return
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            self._frame(first & 0x80, first & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2, 0):
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments.clear()
                self.on_message(self, message)
        elif opcode == 9:  # ping
            self._send(0xA, payload)
        elif opcode == 8:  # close: answer it and let the server close the TCP connection
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self._send(0x8, payload[:2])
            self._close_sent = True

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
        self.transport.write(header + mask + masked)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # --- API -----------------------------------------------------------------------------

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Start the closing handshake and let the server close the TCP connection (RFC 6455,
        7.1.1), as a client library does; cut it after ``timeout_s``."""
        if not self._close_sent:
            self._send(0x8, struct.pack("!H", 1000))
            self._close_sent = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        self.close()

    def close(self) -> None:
        # Once a close frame went out (answering the server's), nothing more may (RFC 6455,
        # 5.5.1): a second one is only bytes the server has to read and discard.
        if not self._close_sent:
            self._send(0x8, struct.pack("!H", 1000))
            self._close_sent = True
        if self.transport is not None:
            self.transport.close()


async def open_ws(url: str, on_message: OnMessage, timeout_s: float = 30) -> WsConnection:
    """Connect and complete the opening handshake."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    return await open_get(url, lambda: WsConnection(on_message), headers, timeout_s)

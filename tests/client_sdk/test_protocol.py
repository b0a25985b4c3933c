"""The shared protocol and the SDK's pure parts: unknown frame types, codes, the event
stream's fields, the cursor, and where TLS and proxy settings go."""

from __future__ import annotations

import ssl

import msgspec
import pytest
from httpx_sse import ServerSentEvent

from delineate_client import AsyncClient
from delineate_client.subscription import (
    Cursor,
    Subscription,
    _connect_options,
    _event_frame,
    is_terminal,
    skip_unknown,
)
from delineate_protocol import CloseCode, ErrorCode
from delineate_protocol.frames import (
    ProgressFrame,
    UnknownFrame,
    decode_frame,
    decode_server_message,
)

JOB = "2d1b7a1c-4b8e-4c55-9a57-8f0f7e5c0c3a"
NEW_KIND = b'{"type":"paused","jobId":"%s","seq":7,"epoch":"e1","until":99}' % JOB.encode()


def test_a_frame_of_an_unknown_type_decodes_to_unknown_frame() -> None:
    """A newer server's frame type is kept whole, with its position, never an exception."""
    for decode in (decode_frame, decode_server_message):
        frame = decode(NEW_KIND)
        assert isinstance(frame, UnknownFrame)
        assert (frame.type, frame.job_id, frame.seq, frame.epoch) == ("paused", JOB, 7, "e1")
        assert frame.data["until"] == 99
        assert not is_terminal(frame)


def test_a_malformed_frame_of_a_known_type_still_raises() -> None:
    """Only the type is forgiven: a known frame missing its fields is still invalid."""
    with pytest.raises(msgspec.ValidationError):
        decode_frame(b'{"type":"progress","jobId":"x","seq":1}')
    with pytest.raises(msgspec.ValidationError):
        decode_frame(b'{"jobId":"x","seq":1}')


def test_unknown_frames_move_the_cursor_and_are_skipped_unless_asked_for() -> None:
    """An unknown frame counts for resume (its seq) and is skipped by default."""
    cursor = Cursor("e1:6")
    frame = decode_frame(NEW_KIND)
    assert cursor.accept(frame)
    assert cursor.position == "e1:7"
    assert skip_unknown(frame, wanted=False)
    assert not skip_unknown(frame, wanted=True)


def test_sse_event_names_the_frame_type() -> None:
    """event: is honoured: a known name decodes the frame; an unknown one is UnknownFrame."""
    progress = ProgressFrame(job_id=JOB, seq=3, progress=5.0, bytes_done=1, bytes_total=2,
                             files_done=0, files_total=1)  # fmt: skip
    data = msgspec.json.encode(progress).decode()
    assert _event_frame(ServerSentEvent(event="progress", data=data)) == progress
    assert _event_frame(ServerSentEvent(data=data)) == progress
    odd = _event_frame(ServerSentEvent(event="heartbeat-v2", data=data))
    assert isinstance(odd, UnknownFrame)
    assert (odd.type, odd.seq) == ("heartbeat-v2", 3)


async def test_sse_retry_is_the_least_reconnect_delay() -> None:
    """After the stream said retry: 2000, an SSE reconnect waits at least 2 s."""
    async with AsyncClient("http://127.0.0.1:9") as client:
        sub = Subscription(client, JOB, None, False)
        sub.transport, sub.server_retry = "sse", 2.0
        assert sub._delay(0) >= 2.0
        sub.transport = "websocket"
        assert sub._delay(0) < 2.0


async def test_tls_and_proxy_settings_reach_the_websocket_transport() -> None:
    """ssl_context goes to wss connections, and proxy (or the environment's) to every one."""
    context = ssl.create_default_context()
    async with AsyncClient("https://h", ssl_context=context, proxy="http://p:3128") as client:
        options = _connect_options(client, "wss://h/v1/ws")
        assert options["ssl"] is context
        assert options["proxy"] == "http://p:3128"
    async with AsyncClient("http://h", trust_env=False) as plain:
        options = _connect_options(plain, "ws://h/v1/ws")
        assert "ssl" not in options
        assert options["proxy"] is None


def test_codes_equal_their_wire_values() -> None:
    """The enums compare equal to the strings and integers on the wire."""
    assert ErrorCode.NOT_FOUND == "not_found"
    assert ErrorCode("job_lost") is ErrorCode.JOB_LOST
    assert CloseCode.TRY_AGAIN_LATER == 1013
    assert CloseCode.SERVICE_RESTART.retryable
    assert not CloseCode.NOT_FOUND.retryable

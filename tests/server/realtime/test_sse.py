"""SSE formatting and resume-point parsing (pure)."""

import pytest

from delineate.errors import BadRequest
from delineate.realtime.outbox import Outgoing
from delineate.realtime.resume import Since
from delineate.realtime.sse import format_retry, format_sse_event, parse_since


def test_event_has_id_event_and_data() -> None:
    """id is the seq, event the frame type, data the JSON; a blank line ends the event."""
    assert format_sse_event('{"a":1}', event="progress", id=7) == (
        b'id: 7\nevent: progress\ndata: {"a":1}\n\n'
    )


def test_multiline_data_becomes_several_data_fields() -> None:
    """A newline in data cannot end the event early."""
    assert format_sse_event("a\nb") == b"data: a\ndata: b\n\n"


def test_retry_hint() -> None:
    """The retry field tells EventSource how long to wait before reconnecting."""
    assert format_retry(2000) == b"retry: 2000\n\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("0", Since(None, 0)),
        ("42", Since(None, 42)),
        ("3f9a01bc:42", Since("3f9a01bc", 42)),
    ],
)
def test_since_parses(raw: str | None, expected: Since | None) -> None:
    """An absent or empty value means "from the snapshot"; a bare seq means "in the job's
    current epoch" (positions from before epochs keep working)."""
    assert parse_since(raw) == expected


def test_an_event_id_is_the_frames_position() -> None:
    """A frame's SSE id carries its epoch, so Last-Event-ID names the epoch it came from."""
    item = Outgoing("job", 7, "progress", "{}", epoch="3f9a01bc")
    assert item.sse_event.startswith(b"id: 3f9a01bc:7\n")
    assert parse_since("3f9a01bc:7") == Since("3f9a01bc", 7)


@pytest.mark.parametrize(
    "raw", ["-1", "abc", "1.5", "9" * 40, ":5", "ABC:5", "a:b", "x" * 17 + ":1"]
)
def test_bad_since_is_a_400(raw: str) -> None:
    """Anything but a non-negative integer, optionally after an epoch, is refused."""
    with pytest.raises(BadRequest):
        parse_since(raw)

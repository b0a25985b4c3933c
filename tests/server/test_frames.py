"""Wire types: camelCase keys, tagged frames, strict op validation."""

import msgspec
import pytest

from delineate_protocol.frames import (
    FrameHeader,
    ProgressFrame,
    SubscribeOp,
    encoder,
    frame_decoder,
    header_decoder,
    op_decoder,
)

JOB = "2d1b7a1c-4b8e-4c55-9a57-8f0f7e5c0c3a"


def test_frame_round_trips_with_type_tag_and_camel_case() -> None:
    """Frames carry type, jobId, seq and ts, and decode back to the same Struct."""
    frame = ProgressFrame(
        job_id=JOB,
        seq=3,
        ts=1.5,
        progress=50.0,
        bytes_done=5,
        bytes_total=10,
        files_done=0,
        files_total=1,
    )
    raw = encoder.encode(frame)
    assert raw.startswith(b'{"type":"progress","jobId":"' + JOB.encode())
    assert b'"bytesDone":5' in raw
    assert frame_decoder.decode(raw) == frame
    assert header_decoder.decode(raw) == FrameHeader(type="progress", seq=3, ts=1.5)


def test_subscribe_op_decodes() -> None:
    """The multiplexed socket's subscribe op takes jobId and an optional since."""
    op = op_decoder.decode(f'{{"op":"subscribe","jobId":"{JOB}","since":4}}')
    assert op == SubscribeOp(job_id=JOB, since=4)


@pytest.mark.parametrize(
    "raw",
    [
        '{"op":"dance"}',
        '{"op":"subscribe"}',
        '{"op":"subscribe","jobId":"../etc"}',
        f'{{"op":"subscribe","jobId":"{JOB}","since":-1}}',
        f'{{"op":"subscribe","jobId":"{JOB}","since":"-:4"}}',
        f'{{"op":"subscribe","jobId":"{JOB}","since":4.5}}',
        "[]",
    ],
)
def test_bad_ops_are_rejected(raw: str) -> None:
    """Unknown ops, missing or malformed fields fail validation with a message."""
    with pytest.raises(msgspec.ValidationError):
        op_decoder.decode(raw)


@pytest.mark.parametrize("since", ["4", '"4"', '"3f9a01bc:4"'])
def test_a_position_may_name_its_epoch(since: str) -> None:
    """``since`` is a seq, or an ``"<epoch>:<seq>"`` position (a bare one: the current epoch)."""
    op = op_decoder.decode(f'{{"op":"subscribe","jobId":"{JOB}","since":{since}}}')
    assert isinstance(op, SubscribeOp)
    assert op.since in (4, "4", "3f9a01bc:4")

"""What the log configuration lets through from uvicorn and the WebSocket library."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from delineate.observability import logs


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    """What the configured handler writes, with the loggers' state restored afterwards
    (other tests run uvicorn in this process and set its loggers up their own way)."""
    root = logging.getLogger()
    uvicorn_error = logging.getLogger("uvicorn.error")
    saved_root = root.handlers[:], root.level
    saved_uvicorn = (uvicorn_error.filters[:], uvicorn_error.level, uvicorn_error.disabled,
                     uvicorn_error.propagate)  # fmt: skip
    uvicorn_error.setLevel(logging.NOTSET)
    uvicorn_error.disabled = False
    logs.configure("text")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], root.level = saved_root
    (uvicorn_error.filters[:], uvicorn_error.level, uvicorn_error.disabled,
     uvicorn_error.propagate) = saved_uvicorn  # fmt: skip


def test_a_socket_opening_is_one_line_with_its_path(written: io.StringIO) -> None:
    """uvicorn's "[accepted]" line names the path and client; the WebSocket library's bare
    "connection open" right after it is dropped. Other lines pass ("connection closed"), and
    configuring twice adds no second filter."""
    logs.configure("text")
    logging.getLogger().handlers[0].setStream(written)  # type: ignore[attr-defined]
    log = logging.getLogger("uvicorn.error")
    log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/v1/download/subscribe/j")
    log.info("connection open")
    log.info("connection closed")
    lines = written.getvalue()
    assert '"WebSocket /v1/download/subscribe/j" [accepted]' in lines
    assert "connection open" not in lines
    assert "connection closed" in lines
    assert sum(isinstance(f, logs.RepeatedOpenFilter) for f in log.filters) == 1

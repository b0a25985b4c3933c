"""What the log configuration lets through from uvicorn and the WebSocket library."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from delineate.observability import logs


@pytest.fixture
def configured() -> Iterator[None]:
    root = logging.getLogger()
    uvicorn_error = logging.getLogger("uvicorn.error")
    saved = root.handlers[:], root.level, uvicorn_error.filters[:]
    logs.configure("text")
    yield
    root.handlers[:], root.level, uvicorn_error.filters[:] = saved[0], saved[1], saved[2]


def test_a_socket_opening_is_one_line_with_its_path(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn's "[accepted]" line names the path and client; the WebSocket library's bare
    "connection open" right after it is dropped. Other lines pass ("connection closed"), and
    configuring twice adds no second filter."""
    logs.configure("text")
    log = logging.getLogger("uvicorn.error")
    log.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/v1/download/subscribe/j")
    log.info("connection open")
    log.info("connection closed")
    err = capsys.readouterr().err
    assert '"WebSocket /v1/download/subscribe/j" [accepted]' in err
    assert "connection open" not in err
    assert "connection closed" in err
    assert sum(isinstance(f, logs.RepeatedOpenFilter) for f in log.filters) == 1

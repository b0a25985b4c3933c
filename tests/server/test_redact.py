"""Credentials in query strings are blanked in log lines, keys judged percent-decoded."""

import pytest

from delineate.observability.logs import redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"WebSocket /v1/ws?token=abc.def" 101', '"WebSocket /v1/ws?token=[redacted]" 101'),
        ("/v1/ws?tok%65n=abc&since=3", "/v1/ws?tok%65n=[redacted]&since=3"),
        ("/v1/ws?a=1&%74%6F%6B%65%6E=abc", "/v1/ws?a=1&%74%6F%6B%65%6E=[redacted]"),
        ("token=abc&sig=x", "token=[redacted]&sig=[redacted]"),
        ("/f?X-Amz-Signature=s&expires=9", "/f?X-Amz-Signature=[redacted]&expires=9"),
        ("/v1/ws?tokens=abc", "/v1/ws?tokens=abc"),
        ("job done, seq=3", "job done, seq=3"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected

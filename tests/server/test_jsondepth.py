"""JSON nesting is measured before decoding, strings and all (pure)."""

import msgspec
import pytest

from delineate.jsondepth import depth, too_deep


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["[[[[", "\\\\", "\\"[[["]', 1),
        (b'{"a": "}}}]]]"}', 1),
        (b"[[1], [2], [3]]", 2),
    ],
)
def test_depth_counts_brackets_outside_strings(doc: bytes, expected: int) -> None:
    """Brackets in strings (escaped quotes included) do not nest."""
    assert depth(doc) == expected
    assert depth(doc) == _decoded_depth(msgspec.json.decode(doc))


def _decoded_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_decoded_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_decoded_depth, value.values()), default=0)
    return 0


def test_too_deep_at_the_limit() -> None:
    """The limit itself is allowed; one level more is not; str and bytes alike."""
    assert not too_deep("[" * 32 + "]" * 32, 32)
    assert too_deep("[" * 33 + "]" * 33, 32)
    assert too_deep(b"[" * 100_000, 32)  # unterminated: still refused before decoding
    assert not too_deep(b"[" + b"[]," * 1000 + b"[]]", 32)  # wide, not deep

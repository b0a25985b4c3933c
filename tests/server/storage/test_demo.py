"""Demo source files: the original's availability rule, stable sizes and content."""

import pytest

from delineate.storage import demo
from delineate.storage.keys import bundle_key, is_valid_key, source_key


@pytest.mark.parametrize(("file_id", "available"), [(70000, True), (99999, False), (10003, True)])
def test_availability_rule(file_id: int, available: bool) -> None:
    """A file exists exactly when id % 7 == 0."""
    assert demo.is_available(file_id) is available


def test_size_and_content_are_stable() -> None:
    """The same id always gives the same bytes, whatever the chunking."""
    size = demo.size_of(70000)
    assert demo.MIN_SIZE <= size < demo.MIN_SIZE + demo.SPREAD
    whole = demo.content(70000)
    assert len(whole) == size
    assert b"".join(demo.chunks(70000, 10_000)) == whole
    assert demo.read_range(70000, 100_000, 100_010) == whole[100_000:100_010]


def test_different_ids_differ() -> None:
    """Two files do not share content."""
    assert demo.read_range(70000, 0, 64) != demo.read_range(70007, 0, 64)


def test_keys_are_built_from_numbers_and_uuids_only() -> None:
    """Keys never contain caller text beyond an int or a parsed uuid."""
    assert source_key(70000) == "downloads/70000.zip"
    assert bundle_key("2D1B7A1C-4B8E-4C55-9A57-8F0F7E5C0C3A").startswith("exports/2d1b7a1c")
    with pytest.raises(ValueError, match="badly formed"):
        bundle_key("../../etc/passwd")
    assert not is_valid_key("downloads/../../etc/passwd")
    assert not is_valid_key("exports/%2e%2e.zip")

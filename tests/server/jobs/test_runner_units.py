"""Pure helpers of the runner."""

from delineate.jobs.runner import MIN_CHUNK, bundle_too_large, paced_chunk_size
from delineate.storage.base import CHUNK_SIZE


def test_chunks_are_small_enough_for_a_progress_frame_every_interval() -> None:
    # 1 MiB over 20 s at 0.5 s: 40 steps of ~26 KB, so progress can move twice a second.
    assert paced_chunk_size(1024 * 1024, 20.0, 0.5) == -(-1024 * 1024 // 40)
    assert paced_chunk_size(100 * 1024 * 1024, 20.0, 0.5) == CHUNK_SIZE  # big: as before
    assert paced_chunk_size(10_000, 60.0, 0.1) == MIN_CHUNK  # tiny files: not byte by byte
    assert paced_chunk_size(1024 * 1024, 0.0, 0.5) == CHUNK_SIZE  # no simulated delay


def test_never_more_chunks_than_intervals() -> None:
    """Chunks a little shorter than the interval would come faster than progress frames may."""
    for size in (300_000, 798_311, 1_048_577, 1_500_001):
        chunk = paced_chunk_size(size, 33.0, 0.5)
        assert -(-size // chunk) <= 66


def test_bundle_cap() -> None:
    assert bundle_too_large(10, 0) is None  # 0 = no cap
    assert bundle_too_large(10, 10) is None
    message = bundle_too_large(11, 10)
    assert message is not None
    assert "11 bytes" in message
    assert "10 bytes" in message

"""Exactly-once merge of history/snapshot with live frames, and the history coverage rule."""

import pytest

from delineate.realtime.resume import Sequencer, history_covers


def test_live_frames_are_held_while_catching_up() -> None:
    """Nothing is delivered before the catch-up; then history and held frames merge in order."""
    seq: Sequencer[str] = Sequencer(last_seq=2)
    assert seq.offer(5, "f5") == []
    assert seq.offer(4, "f4") == []
    assert seq.caught_up([(3, "h3"), (4, "h4")]) == ["h3", "h4", "f5"]


def test_duplicates_and_old_frames_are_dropped() -> None:
    """A frame at or below the last delivered seq is never delivered again."""
    seq: Sequencer[str] = Sequencer()
    seq.caught_up([(7, "snapshot")])
    assert seq.offer(7, "dup") == []
    assert seq.offer(6, "old") == []
    assert seq.offer(8, "new") == ["new"]
    assert seq.offer(8, "again") == []


def test_snapshot_absorbs_frames_it_already_reflects() -> None:
    """Held frames at or below the snapshot's seq are dropped after the snapshot."""
    seq: Sequencer[str] = Sequencer()
    seq.offer(3, "f3")
    seq.offer(5, "f5")
    assert seq.caught_up([(4, "snap")]) == ["snap", "f5"]


def test_restart_holds_again() -> None:
    """After a broker reconnect, live frames are held until the history is read again."""
    seq: Sequencer[str] = Sequencer()
    seq.caught_up([(1, "s")])
    seq.restart()
    assert seq.offer(3, "f3") == []
    assert seq.caught_up([(2, "h2"), (3, "h3")]) == ["h2", "h3"]


@pytest.mark.parametrize(
    ("since", "first", "latest", "ended", "covered"),
    [
        (5, 1, 9, False, True),  # everything after 5 is kept
        (5, 6, 9, False, True),  # history starts right after the client's last frame
        (5, 7, 9, False, False),  # frame 6 was trimmed
        (9, None, 9, False, True),  # nothing kept, nothing missed
        (9, None, 9, True, True),  # likewise, the job over
        (4, None, 9, False, False),  # nothing kept, frames missed
        (0, None, 1, False, True),  # the first frame saved, on its way to the history
        (0, None, 1, True, False),  # an ended job's only frame, gone: the snapshot says it
        (12, 1, 9, False, False),  # a seq this job never reached
    ],
)
def test_history_covers(
    since: int, first: int | None, latest: int, ended: bool, covered: bool
) -> None:
    """Replay is exact only when the history reaches back to since+1 (or, with nothing
    kept, when at most the snapshot's own frame is still on its way)."""
    assert history_covers(since, first, latest, ended) is covered

"""Offset commits: never past an unfinished record, whatever order records finish in."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.core.offsets import OffsetTracker


def tracker_with(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add(offset)
    return tracker


def test_nothing_to_commit_until_the_first_record_is_done() -> None:
    tracker = OffsetTracker()
    assert tracker.commit_point() is None
    tracker = tracker_with(10, 11, 12)
    assert tracker.pending == 3
    assert tracker.commit_point() is None
    tracker.done(11)
    assert tracker.commit_point() is None
    tracker.done(10)
    assert tracker.commit_point() == 12
    tracker.done(12)
    assert tracker.commit_point() == 13
    assert tracker.pending == 0


def test_gaps_in_offsets_are_followed_by_record_not_by_offset() -> None:
    tracker = tracker_with(5, 9, 20)
    tracker.done(5)
    assert tracker.commit_point() == 9
    tracker.done(20)
    assert tracker.commit_point() == 9
    tracker.done(9)
    assert tracker.commit_point() == 21


def test_a_commit_point_is_offered_once_until_it_moves() -> None:
    tracker = tracker_with(0, 1, 2)
    tracker.done(0)
    assert tracker.commit_point() == 1
    tracker.mark_committed(1)
    assert tracker.commit_point() is None
    tracker.done(1)
    assert tracker.commit_point() == 2
    tracker.mark_committed(2)
    tracker.mark_committed(2)
    with pytest.raises(ValueError, match="behind"):
        tracker.mark_committed(1)


def test_misuse_is_refused() -> None:
    tracker = tracker_with(3, 4)
    with pytest.raises(ValueError, match="not after"):
        tracker.add(4)
    with pytest.raises(ValueError, match="not after"):
        tracker.add(2)
    with pytest.raises(KeyError):
        tracker.done(7)
    tracker.done(3)
    with pytest.raises(KeyError):
        tracker.done(3)
    assert tracker.pending == 1


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    """Offsets with gaps, and an interleaving of adds, dones (any order) and commits."""
    gaps = draw(st.lists(st.integers(1, 4), min_size=1, max_size=40))
    start = draw(st.integers(0, 1_000))
    offsets = [start + sum(gaps[: i + 1]) for i in range(len(gaps))]
    events: list[tuple[str, int]] = []
    waiting: list[int] = []
    remaining = list(offsets)
    while remaining or waiting:
        if remaining and (not waiting or draw(st.booleans())):
            offset = remaining.pop(0)
            waiting.append(offset)
            events.append(("add", offset))
        else:
            index = draw(st.integers(0, len(waiting) - 1))
            events.append(("done", waiting.pop(index)))
        if draw(st.booleans()):
            events.append(("commit", 0))
    return offsets, events


@settings(max_examples=400)
@given(schedules())
def test_the_commit_point_never_passes_an_unfinished_record(
    schedule: tuple[list[int], list[tuple[str, int]]],
) -> None:
    offsets, events = schedule
    tracker = OffsetTracker()
    consumed: list[int] = []
    finished: set[int] = set()
    committed = offsets[0]
    for kind, offset in events:
        if kind == "add":
            tracker.add(offset)
            consumed.append(offset)
        elif kind == "done":
            tracker.done(offset)
            finished.add(offset)
        point = tracker.commit_point()
        unfinished = [o for o in consumed if o not in finished]
        safe = unfinished[0] if unfinished else consumed[-1] + 1 if consumed else None
        if point is not None:
            # Exactly the first unfinished record (or past the last), and forward only.
            assert point == safe
            assert point > committed
            if kind == "commit":
                tracker.mark_committed(point)
                committed = point
        else:
            assert safe is None or safe <= committed
        assert tracker.pending == len(unfinished)
        # The window: from the first unfinished record to the last consumed, done or not.
        window = len(consumed) - consumed.index(unfinished[0]) if unfinished else 0
        assert tracker.window == window
    final = tracker.commit_point()
    assert (final if final is not None else committed) == offsets[-1] + 1


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from([1, 1, 1, 2, 7]), min_size=1, max_size=300),
    st.randoms(use_true_random=False),
)
def test_long_runs_finish_in_any_order_and_repeats_are_refused(
    gaps: list[int], rng: random.Random
) -> None:
    # Long runs of consecutive offsets (the usual case) with a few gaps, all consumed,
    # then finished in a random order: the tracker drops its finished front as it goes.
    offsets = list(itertools.accumulate(gaps))
    tracker = tracker_with(*offsets)
    order = list(offsets)
    rng.shuffle(order)
    unfinished = set(offsets)
    for offset in order:
        tracker.done(offset)
        unfinished.discard(offset)
        with pytest.raises(KeyError):
            tracker.done(offset)
        with pytest.raises(KeyError):
            tracker.done(offset - 1 if offset - 1 not in unfinished else offsets[-1] + 1)
        expected = min(unfinished) if unfinished else offsets[-1] + 1
        assert tracker.commit_point() == (expected if expected > offsets[0] else None)
        assert tracker.pending == len(unfinished)
        assert tracker.window == sum(1 for o in offsets if o >= expected)


def test_a_skip_past_deleted_records_is_committed_once_the_rest_is_done() -> None:
    tracker = OffsetTracker()
    tracker.add(10)
    tracker.add(11)
    tracker.mark_committed(10)
    tracker.skip_to(500)  # 12..499 were deleted by retention before they were read
    assert tracker.commit_point() is None  # 10 is not done yet
    tracker.done(10)
    tracker.done(11)
    assert tracker.commit_point() == 500
    tracker.add(500)
    assert tracker.commit_point() == 500


def test_a_skip_on_a_partition_nothing_was_read_from_yet() -> None:
    tracker = OffsetTracker()
    tracker.skip_to(42)
    assert tracker.commit_point() == 42
    tracker.skip_to(7)  # never backwards
    assert tracker.commit_point() == 42


def test_a_record_taken_in_while_a_skip_is_being_committed_is_no_conflict() -> None:
    # 500 is a transaction marker: the first record after the gap is 501, taken in while
    # the commit of 500 is on its way.
    tracker = OffsetTracker()
    tracker.skip_to(500)
    assert tracker.commit_point() == 500
    tracker.add(501)
    tracker.mark_committed(500)  # refused as "backwards" before
    assert tracker.commit_point() == 501  # the marker at 500 is behind us too
    tracker.done(501)
    assert tracker.commit_point() == 502

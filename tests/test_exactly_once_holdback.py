"""Which results may go into a partition's next transaction: never one without an offset
that covers it, never an offset past a record without a result, each result committed
exactly once, whatever order records resolve in and whichever transactions abort."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamstop.core.holdback import Holdback, Released
from streamstop.core.offsets import OffsetTracker


class Partition:
    """A partition as the sink sees it: the offset tracker (done = resolved) and the
    holdback, with the transactions' outcomes recorded."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets
        self.tracker = OffsetTracker()
        for offset in offsets:
            self.tracker.add(offset)
        self.holdback: Holdback[int] = Holdback()
        self.open: list[int] = []
        self.committed: list[int] = []  # every result committed, in commit order
        self.committed_offset: int | None = None

    def resolve(self, offset: int) -> None:
        self.tracker.done(offset)
        self.holdback.add(offset, offset)

    def release(self, limit: int) -> Released[int] | None:
        released = self.holdback.release(self.tracker.commit_point(), limit)
        if released is not None:
            # Each result goes in with an offset past its own record.
            assert all(item < released.offset for item in released.items)
            self.open.extend(released.items)
        return released

    def commit(self) -> None:
        items, offset = self.holdback.committed()
        assert items == self.open
        self.tracker.mark_committed(offset)
        self.committed.extend(items)
        self.open.clear()
        # A restart reads from `offset`: everything before it has a committed result,
        # nothing from it on has one.
        assert sorted(self.committed) == [o for o in self.offsets if o < offset]
        assert self.committed_offset is None or offset > self.committed_offset
        self.committed_offset = offset

    def abort(self) -> None:
        self.holdback.aborted()
        self.open.clear()


def test_results_after_the_first_unresolved_record_are_held_back() -> None:
    part = Partition([0, 1, 2, 3])
    part.resolve(1)
    part.resolve(2)
    assert part.release(10) is None  # record 0 has no result: nothing may go
    part.resolve(0)
    released = part.release(10)
    assert released == Released([0, 1, 2], 3)
    part.commit()
    part.resolve(3)
    assert part.release(10) == Released([3], 4)
    part.commit()
    assert len(part.holdback) == 0


def test_a_capped_transaction_commits_only_up_to_its_last_result() -> None:
    part = Partition([10, 11, 15, 16])  # gaps: offsets follow records
    for offset in (10, 11, 15, 16):
        part.resolve(offset)
    first = part.release(2)
    assert first == Released([10, 11], 15)
    assert part.release(0) is None  # nothing new for the open transaction
    second = part.release(5)
    assert second == Released([15, 16], 17)
    part.commit()


def test_an_aborted_transaction_gives_its_results_back() -> None:
    part = Partition([0, 1, 2])
    for offset in (0, 1):
        part.resolve(offset)
    assert part.release(10) == Released([0, 1], 2)
    assert part.holdback.in_transaction == 2
    part.abort()
    assert part.holdback.in_transaction == 0
    assert len(part.holdback) == 2
    part.resolve(2)
    assert part.release(10) == Released([0, 1, 2], 3)
    part.commit()
    assert part.committed == [0, 1, 2]


def test_offsets_past_records_that_no_longer_exist_commit_without_results() -> None:
    # Records deleted before they were consumed (an offset reset): the commit point
    # moves past them once the records taken in are done, with nothing to publish.
    part = Partition([0])
    part.resolve(0)
    assert part.release(10) == Released([0], 1)
    part.commit()
    part.tracker.skip_to(50)
    assert part.holdback.release(part.tracker.commit_point(), 10) == Released([], 50)


def test_a_partition_gone_lets_go_of_everything_it_held() -> None:
    part = Partition([0, 1, 2, 3])
    for offset in (0, 1, 3):
        part.resolve(offset)
    part.release(10)
    assert sorted(part.holdback.clear()) == [0, 1, 3]
    assert len(part.holdback) == 0
    assert not part.holdback.is_open


def test_committing_without_an_open_transaction_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="no transaction"):
        Holdback[int]().committed()


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    data=st.data(),
)
def test_every_result_is_committed_exactly_once_and_never_ahead_of_its_offset(
    gaps: list[int], data: st.DataObject
) -> None:
    offsets = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    part = Partition(offsets)
    unresolved = data.draw(st.permutations(offsets))
    steps = data.draw(
        st.lists(st.sampled_from(["resolve", "release", "commit", "abort"]), max_size=200)
    )
    for step in steps:
        if step == "resolve" and unresolved:
            part.resolve(unresolved.pop())
        elif step == "release":
            part.release(data.draw(st.integers(min_value=1, max_value=8)))
        elif step == "commit" and part.holdback.is_open:
            part.commit()
        elif step == "abort":
            part.abort()
        decided = len(offsets) - len(unresolved)
        assert len(part.holdback) == decided - len(part.committed)
    # Whatever happened, the rest resolves and goes out in transactions of its own.
    for offset in unresolved:
        part.resolve(offset)
    if part.holdback.is_open:
        part.commit()
    while part.release(3) is not None:
        part.commit()
    assert sorted(part.committed) == offsets
    assert len(part.committed) == len(set(part.committed))
    assert part.committed_offset == offsets[-1] + 1
    assert len(part.holdback) == 0
